"""Small building blocks shared by the backbone, encoder and decoder."""
import torch
import torch.nn.functional as F
from torch import nn


def get_activation(name):
    """'relu' | 'silu' | 'gelu' | None -> module (None gives Identity)."""
    if name is None:
        return nn.Identity()
    table = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU}
    if name not in table:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(table)}")
    return table[name]()


def upsample_2x(x, mode):
    """F_{l+1} [B, C, h, w] -> [B, C, 2h, 2w] for a top-down fusion ("nearest" | "bilinear",
    the latter with align_corners False)."""
    return F.interpolate(x, scale_factor=2.0, mode=mode, align_corners=False if mode == "bilinear" else None)


class ConvNormLayer(nn.Module):
    """Conv2d (no bias by default, 'same' padding for odd kernels) -> BatchNorm2d -> activation."""

    def __init__(self, ch_in, ch_out, kernel_size, stride=1, padding=None, bias=False, act=None):
        super().__init__()
        padding = (kernel_size - 1) // 2 if padding is None else padding
        self.conv = nn.Conv2d(ch_in, ch_out, kernel_size, stride, padding=padding, bias=bias)
        self.norm = nn.BatchNorm2d(ch_out)
        self.act = get_activation(act)

    def forward(self, x):
        return self.act(self.norm(self.conv(x)))


class MLP(nn.Module):
    """num_layers Linear layers with ReLU between them (none after the last)."""

    def __init__(self, input_dim, hidden_dim, output_dim, num_layers):
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


def inverse_sigmoid(x, eps=1e-5):
    """logit(x) with x clipped to [0, 1] and both log arguments clamped at eps."""
    x = x.clip(min=0.0, max=1.0)
    return torch.log(x.clip(min=eps) / (1 - x).clip(min=eps))


def bias_init_with_prob(prior_prob=0.01):
    """Bias that makes sigmoid(bias) == prior_prob (focal-loss head initialisation)."""
    return float(-torch.log(torch.tensor((1 - prior_prob) / prior_prob)))
