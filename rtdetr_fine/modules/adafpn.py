"""AdaFPN (adaptive upsampling + attention fusion) in RT-DETR's hybrid encoder, as the FINE authors
re-implemented and ran it for the FINE paper's Table 2 (HyungseopLee/FINE-FPN,
FINE_to_RT-DETR-PyTorch: `AdaUp`, `AFF`, `AdaFPNBlock` in `prior_works.py`, "exp4: AdaFPN" in their
`hybrid_encoder.py`; their R18 log v1_r18vd_12e_coco_AdaFPN: 22,914,052 trainable parameters).

At top-down fusion j, `ada_fpn_blocks[j]` (AdaUp, then AFF) replaces the whole fusion: the
upsampling and the CSP block. There are no `fpn_blocks` (their run's printed model has none and
its parameter count needs none, though their code at HEAD still builds them), so the block's output
is the fused map: the stride-8 output of the top-down path is block 1's output.

  * AdaUp (`ada_up`): offsets for 4 sampling points are predicted from [bilinear 2x F_{l+1}, P_l];
    a 1x1 conv of F_{l+1} at its own (coarse) resolution is sampled at the 4 points with
    grid_sample (bilinear, border padding, align_corners False) and the samples are averaged.
  * AFF (`aff`): two 3x3 convs + ReLU on [AdaUp output, P_l], then two 3x3 convs give two sigmoid
    weights per pixel; the output is w_0 * AdaUp output + w_1 * P_l (no norm, no residual).

Kept as the authors wrote it: the base grid is linspace(-1, 1) over the upsampled size, built in
float32 and promoted when the offsets are added (a float64 grid moves float64 outputs by ~5e-7),
and with align_corners=False it does not hit pixel centres; the offsets are in pixels of the
upsampled grid (channel 2i: x, 2i + 1: y of point i), normalised by 2 / size; the offset conv starts
at zero. Their AFF resizes the upsampled map when its size differs from P_l's; RT-DETR's inputs
are multiples of 32, where the sizes always agree, so that branch is left out.
"""
import torch
import torch.nn.functional as F
from torch import nn


def base_grid(height: int, width: int, device=None) -> torch.Tensor:
    """[1, H, W, 2] (x, y) = linspace(-1, 1) over width and height, in float32 (the authors' grid)."""
    ys = torch.linspace(-1, 1, height, dtype=torch.float32, device=device)
    xs = torch.linspace(-1, 1, width, dtype=torch.float32, device=device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1)[None]


class AdaUp(nn.Module):
    """Adaptive 2x upsampling of F_{l+1} [B, C, h, w] guided by P_l [B, C_low, 2h, 2w] -> [B, C_out, 2h, 2w]."""

    def __init__(self, in_channels: int, out_channels: int, scale_factor: int = 2, num_points: int = 4):
        super().__init__()
        self.scale_factor, self.num_points = scale_factor, num_points
        self.offset_conv1 = nn.Conv2d(in_channels + out_channels, in_channels, 1)
        self.offset_conv2 = nn.Conv2d(in_channels, 2 * num_points, 3, padding=1)
        self.feature_conv = nn.Conv2d(in_channels, out_channels, 1)
        nn.init.zeros_(self.offset_conv2.weight)   # starts as the same sample taken 4 times
        nn.init.zeros_(self.offset_conv2.bias)

    def offsets(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        """[B, 2 * points, 2h, 2w]: per point (x, y) in pixels of the upsampled grid."""
        upsampled = F.interpolate(high, scale_factor=self.scale_factor, mode="bilinear", align_corners=False)
        return self.offset_conv2(F.relu(self.offset_conv1(torch.cat([upsampled, low], dim=1))))

    def sample(self, features: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Mean over the points of features [B, C, h, w] sampled at base grid + offset: [B, C, 2h, 2w]."""
        batch, height, width = offsets.shape[0], offsets.shape[-2], offsets.shape[-1]
        points = offsets.view(batch, self.num_points, 2, height, width).permute(0, 3, 4, 1, 2)   # [B, H, W, P, 2]
        points = points / torch.tensor([width, height], device=offsets.device) * 2
        grid = base_grid(height, width, offsets.device)
        samples = [F.grid_sample(features, grid + points[..., i, :], mode="bilinear", padding_mode="border",
                                 align_corners=False) for i in range(self.num_points)]
        return torch.stack(samples).mean(dim=0)

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        return self.sample(self.feature_conv(high), self.offsets(high, low))


class AFF(nn.Module):
    """Attention feature fusion of the upsampled map a and P_l (both [B, C, H, W]) -> [B, C, H, W]."""

    def __init__(self, in_channels: int, out_channels: int, reduction: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.attention_conv = nn.Sequential(
            nn.Conv2d(out_channels, out_channels // reduction, 3, padding=1), nn.ReLU(),
            nn.Conv2d(out_channels // reduction, 2, 3, padding=1), nn.Sigmoid())

    def weights(self, upsampled: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        """[B, 2, H, W]: the per-pixel weights of the upsampled map and of P_l."""
        features = F.relu(self.conv2(F.relu(self.conv1(torch.cat([upsampled, low], dim=1)))))
        return self.attention_conv(features)

    def forward(self, upsampled: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        w = self.weights(upsampled, low)
        return w[:, 0:1] * upsampled + w[:, 1:2] * low


class AdaFPNBlock(nn.Module):
    """AdaUp then AFF: F_{l+1} [B, C_high, h, w], P_l [B, C_low, 2h, 2w] -> [B, C_out, 2h, 2w]."""

    def __init__(self, high_channels: int, low_channels: int, out_channels: int):
        super().__init__()
        self.ada_up = AdaUp(high_channels, out_channels)
        self.aff = AFF(out_channels + low_channels, out_channels)

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        return self.aff(self.ada_up(high, low), low)


class AdaFPNAlignment:
    """AdaFPN in RT-DETR's hybrid encoder (the authors' "exp4"): `attach` replaces `fpn_blocks` with
    `ada_fpn_blocks`, one AdaFPNBlock per top-down fusion."""

    def attach(self, encoder):
        dim = encoder.hidden_dim
        del encoder.fpn_blocks
        encoder.ada_fpn_blocks = nn.ModuleList(AdaFPNBlock(dim, dim, dim) for _ in encoder.in_channels[1:])
        encoder.alignment = self
        return encoder

    def fuse(self, encoder, j: int, feat_high: torch.Tensor, feat_low: torch.Tensor) -> torch.Tensor:
        """F_{l+1} [B, C, h, w], P_l [B, C, 2h, 2w] -> the fused map [B, C, 2h, 2w]."""
        return encoder.ada_fpn_blocks[j](feat_high, feat_low)
