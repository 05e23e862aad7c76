"""RT-DETR's hybrid encoder: AIFI on the stride-32 map, then CCFF (top-down FPN + bottom-up PAN).

AIFI = one transformer encoder layer (intra-scale interaction, RT-DETR Sec. 4.2);
CCFF = cross-scale fusion with CSPRepLayer blocks. The papers' alignment modules (FINE, and the
FINE paper's Table 2 baselines FaPN, AdaFPN, MGC; rtdetr_fine/modules/) plug into two hooks:
`HybridEncoder.project` (the input projections) and `HybridEncoder.fuse` (one top-down fusion).
"""
import torch
import torch.nn.functional as F
from torch import nn

from ..nn.layers import ConvNormLayer, get_activation, upsample_2x
from ..nn.position_encoding import sincos_2d


class TransformerEncoderLayer(nn.Module):
    """Post-norm self-attention + feed-forward layer; the position embedding is added to Q and K."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu"):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout, batch_first=True)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = get_activation(activation)

    def forward(self, src, pos_embed):
        q = k = src + pos_embed
        attn, _ = self.self_attn(q, k, value=src, need_weights=False)
        src = self.norm1(src + self.dropout1(attn))
        ffn = self.linear2(self.dropout(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout2(ffn))


class TransformerEncoder(nn.Module):
    def __init__(self, layer_fn, num_layers):
        super().__init__()
        self.layers = nn.ModuleList(layer_fn() for _ in range(num_layers))

    def forward(self, src, pos_embed):
        for layer in self.layers:
            src = layer(src, pos_embed)
        return src


class RepVggBlock(nn.Module):
    """3x3 conv-BN + 1x1 conv-BN branches, summed; `convert_to_deploy` fuses them into one 3x3 conv."""

    def __init__(self, ch_in, ch_out, act="relu"):
        super().__init__()
        self.ch_in, self.ch_out = ch_in, ch_out
        self.conv1 = ConvNormLayer(ch_in, ch_out, 3, 1, padding=1)
        self.conv2 = ConvNormLayer(ch_in, ch_out, 1, 1, padding=0)
        self.act = get_activation(act)

    def forward(self, x):
        if hasattr(self, "conv"):
            return self.act(self.conv(x))
        return self.act(self.conv1(x) + self.conv2(x))

    @torch.no_grad()
    def convert_to_deploy(self):
        """Fold both BNs into their convs and the 1x1 kernel into the 3x3 centre tap."""
        if hasattr(self, "conv"):
            return
        self.conv = self.fused_conv(self.conv1.norm, self.conv2.norm)
        del self.conv1, self.conv2

    @torch.no_grad()
    def fused_conv(self, norm1, norm2) -> nn.Conv2d:
        """The 3x3 conv that computes conv1 -> norm1 plus conv2 -> norm2 (norms in eval mode)."""
        k3, b3 = _fuse_conv_bn(self.conv1.conv, norm1)
        k1, b1 = _fuse_conv_bn(self.conv2.conv, norm2)
        conv = nn.Conv2d(self.ch_in, self.ch_out, 3, 1, padding=1).to(k3)
        conv.weight.copy_(k3 + F.pad(k1, [1, 1, 1, 1]))
        conv.bias.copy_(b3 + b1)
        return conv


def _fuse_conv_bn(conv, bn):
    """Bias-free conv followed by BN -> equivalent (kernel, bias)."""
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    return conv.weight * scale[:, None, None, None], bn.bias - bn.running_mean * scale


class CSPRepLayer(nn.Module):
    """CSP block: two 1x1 branches, RepVGG blocks on one, summed, optional 1x1 to out_channels."""

    def __init__(self, in_channels, out_channels, num_blocks=3, expansion=1.0, act="silu"):
        super().__init__()
        hidden = int(out_channels * expansion)
        self.conv1 = ConvNormLayer(in_channels, hidden, 1, 1, act=act)
        self.conv2 = ConvNormLayer(in_channels, hidden, 1, 1, act=act)
        self.bottlenecks = nn.Sequential(*[RepVggBlock(hidden, hidden, act=act) for _ in range(num_blocks)])
        self.conv3 = ConvNormLayer(hidden, out_channels, 1, 1, act=act) if hidden != out_channels else nn.Identity()

    def forward(self, x):
        return self.conv3(self.bottlenecks(self.conv1(x)) + self.conv2(x))


class HybridEncoder(nn.Module):
    """Backbone maps (strides 8/16/32) -> three fused maps of `hidden_dim` channels, same strides.

    `alignment` is None: the official encoder. The builder may attach an alignment module afterwards
    (`FaPNAlignment().attach(encoder)`, rtdetr_fine/modules/): it adds its layers under its authors'
    names, deletes the official layers it replaces and sets `alignment`, whose `project(encoder, feats)`
    and/or `fuse(encoder, j, feat_high, feat_low)` then stand in for the official computation.
    """

    def __init__(self, in_channels=(512, 1024, 2048), feat_strides=(8, 16, 32), hidden_dim: int = 256,
                 nhead: int = 8, dim_feedforward: int = 1024, dropout: float = 0.0, enc_act: str = "gelu",
                 use_encoder_idx=(2,), num_encoder_layers: int = 1, pe_temperature: float = 10000,
                 expansion: float = 1.0, depth_mult: float = 1.0, act: str = "silu"):
        super().__init__()
        self.in_channels = list(in_channels)
        self.feat_strides = list(feat_strides)
        self.hidden_dim = hidden_dim
        self.use_encoder_idx = list(use_encoder_idx)
        self.num_encoder_layers = num_encoder_layers
        self.pe_temperature = pe_temperature
        self.out_channels = [hidden_dim] * len(in_channels)
        self.out_strides = list(feat_strides)
        n = len(in_channels)

        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, hidden_dim, 1, bias=False), nn.BatchNorm2d(hidden_dim)) for c in in_channels)
        make_layer = lambda: TransformerEncoderLayer(hidden_dim, nhead, dim_feedforward, dropout, enc_act)  # noqa: E731
        self.encoder = nn.ModuleList(TransformerEncoder(make_layer, num_encoder_layers) for _ in use_encoder_idx)

        blocks = round(3 * depth_mult)
        self.lateral_convs = nn.ModuleList(ConvNormLayer(hidden_dim, hidden_dim, 1, 1, act=act) for _ in range(n - 1))
        self.fpn_blocks = nn.ModuleList(
            CSPRepLayer(hidden_dim * 2, hidden_dim, blocks, expansion, act) for _ in range(n - 1))
        self.downsample_convs = nn.ModuleList(ConvNormLayer(hidden_dim, hidden_dim, 3, 2, act=act) for _ in range(n - 1))
        self.pan_blocks = nn.ModuleList(
            CSPRepLayer(hidden_dim * 2, hidden_dim, blocks, expansion, act) for _ in range(n - 1))

        # A plain attribute, not a module: an attached alignment's layers are the encoder's own
        # children, so none is added when it is None and the state dict stays the official one.
        self.alignment = None

    def intra_scale(self, feat, i):
        """AIFI: self-attention over the tokens of one map. [B, C, H, W] -> [B, C, H, W]."""
        b, c, h, w = feat.shape
        tokens = feat.flatten(2).permute(0, 2, 1)                                  # [B, H*W, C]
        pos = sincos_2d(h, w, self.hidden_dim, self.pe_temperature, feat.device).to(feat.dtype)
        tokens = self.encoder[i](tokens, pos)
        return tokens.permute(0, 2, 1).reshape(b, c, h, w).contiguous()

    def project(self, feats):
        """C_i [B, in_channels[i], H_i, W_i] -> P_i [B, hidden_dim, H_i, W_i]: a 1x1 conv + BN per map,
        or the attached alignment's projection (FaPN, MGC)."""
        if hasattr(self.alignment, "project"):
            return self.alignment.project(self, feats)
        return [proj_i(f) for proj_i, f in zip(self.input_proj, feats)]

    def fuse(self, j, feat_high, feat_low):
        """Top-down fusion j of F_{l+1} [B, C, h, w] with P_l [B, C, 2h, 2w] -> [B, C, 2h, 2w]: the CSP
        block on [nearest 2x F_{l+1}, P_l], or the attached alignment's fusion (FINE, FaPN, AdaFPN)."""
        if hasattr(self.alignment, "fuse"):
            return self.alignment.fuse(self, j, feat_high, feat_low)
        return self.fpn_blocks[j](torch.cat([upsample_2x(feat_high, "nearest"), feat_low], dim=1))

    def top_down(self, feats):
        """FPN: fuse each map with the upsampled coarser one. Returns maps fine to coarse."""
        n = len(feats)
        inner_outs = [feats[-1]]
        for idx in range(n - 1, 0, -1):
            j = n - 1 - idx
            feat_high = self.lateral_convs[j](inner_outs[0])                       # F_{l+1}
            inner_outs[0] = feat_high
            inner_outs.insert(0, self.fuse(j, feat_high, feats[idx - 1]))          # with P_l
        return inner_outs

    def bottom_up(self, inner_outs):
        """PAN: fuse each map with the downsampled finer output."""
        outs = [inner_outs[0]]
        for idx in range(len(inner_outs) - 1):
            downsampled = self.downsample_convs[idx](outs[-1])
            outs.append(self.pan_blocks[idx](torch.cat([downsampled, inner_outs[idx + 1]], dim=1)))
        return outs

    def forward(self, feats):
        if len(feats) != len(self.in_channels):
            raise ValueError(f"HybridEncoder expects {len(self.in_channels)} maps, got {len(feats)}")
        proj = self.project(feats)
        for i, level in enumerate(self.use_encoder_idx):
            if self.num_encoder_layers > 0:
                proj[level] = self.intra_scale(proj[level], i)
        return self.bottom_up(self.top_down(proj))
