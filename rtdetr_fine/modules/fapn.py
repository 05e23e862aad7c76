"""FaPN (Huang et al., ICCV 2021, "FaPN: Feature-aligned Pyramid Network for Dense Image Prediction")
in RT-DETR's hybrid encoder, as the FINE authors re-implemented and ran it for the FINE paper's
Table 2 (HyungseopLee/FINE-FPN, FINE_to_RT-DETR-PyTorch: `prior_works.py` and "exp3: FaPN" in their
`hybrid_encoder.py`; their R18 log v1_r18vd_12e_coco_FaPN: 21,935,680 trainable parameters).

Two parts, under the authors' names so their weights load as they are:
  * FSM, `feature_selection[i]`, replaces the input projection `input_proj[i]` (and its BatchNorm:
    there is none after it): x + x * sigmoid(GN(conv_atten(mean_HW(x)))), then a 1x1 conv to 256.
  * FAM, at top-down fusion j: `offset[j]` (1x1 conv + BN) reads [P_l, 2 * up(F_{l+1})], and
    `feature_align[j]` turns that into the offsets and masks of a modulated deformable 3x3 conv
    (DCNv2) + ReLU that resamples up(F_{l+1}) (nearest 2x); the aligned map takes up(F_{l+1})'s
    place in the CSP block's input [aligned, P_l]. P_l is the FSM output, not selected again.

Kept as the authors wrote it: their 8 "deformable groups" are passed to torchvision's DeformConv2d
as its convolution `groups` (weight [256, 32, 3, 3], 0.572M parameters per DCN, as their log
counts), and the 216 offset/mask channels make 8 offset groups of 32 channels; the offset input
doubles the upsampled map; their zero init of the offset/mask conv and uniform init of the DCN.

Inferred (their released lines stop at `feat_align = ...`, and the active concatenation still reads
the upsampled map): the aligned map replaces it, because their run trained under DDP with
find_unused_parameters=False (the DCN's output must reach the loss), their own FaPN class returns
[aligned, P_l], and their torchvision-FPN variant overwrites the upsampled map with the aligned one.
"""
import math

import torch
from torch import nn
from torchvision.ops import DeformConv2d

from ..nn.layers import upsample_2x


class FeatureSelectionModule(nn.Module):
    """FaPN's FSM: channel attention from the global mean, a residual reweighting, a 1x1 projection.

    x [B, C, H, W] -> [B, out_channels, H, W]. GroupNorm(32, C) normalises the [B, C, 1, 1]
    attention logits, C/32 values per group.
    """

    def __init__(self, in_channels: int, out_channels: int, num_groups: int = 32):
        super().__init__()
        self.conv_atten = nn.Conv2d(in_channels, in_channels, 1, bias=False)
        self.norm_atten = nn.GroupNorm(num_groups, in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        nn.init.xavier_uniform_(self.conv_atten.weight)
        nn.init.xavier_uniform_(self.conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attention = torch.sigmoid(self.norm_atten(self.conv_atten(x.mean(dim=(2, 3), keepdim=True))))
        return self.conv(x + x * attention)


def offset_fusion(channels: int) -> nn.Sequential:
    """offset[j]: 1x1 conv 2C -> C (no bias) + BatchNorm on [P_l, 2 * up(F_{l+1})]."""
    return nn.Sequential(nn.Conv2d(2 * channels, channels, 1, bias=False), nn.BatchNorm2d(channels))


class DeformConvReLU(nn.Module):
    """relu(modulated deformable 3x3 conv): the authors' DCNv2 wrapper around torchvision's DeformConv2d
    (`deform_conv`, weight [C, C / groups, 3, 3] + bias; their init: uniform +-1/sqrt(9 C), bias 0)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.deform_conv = DeformConv2d(channels, channels, 3, padding=1, groups=groups)
        bound = 1 / math.sqrt(channels * 9)
        nn.init.uniform_(self.deform_conv.weight, -bound, bound)
        nn.init.zeros_(self.deform_conv.bias)

    def forward(self, x, offset, mask):
        """x [B, C, H, W], offset [B, 18 G, H, W], mask [B, 9 G, H, W] (G offset groups) -> [B, C, H, W]."""
        return torch.relu(self.deform_conv(x, offset, mask))


class FeatureAlign(nn.Module):
    """feature_align[j]: a 3x3 conv predicts 27 G channels from the offset features; the first 18 G
    are the offsets (torchvision's layout: dy, dx per kernel point, G groups), the last 9 G the
    masks (sigmoid). The authors split them as chunk(3) -> (o1, o2, m), offset = cat(o1, o2): the
    same channels in the same order."""

    def __init__(self, channels: int = 256, groups: int = 8):
        super().__init__()
        self.deform_conv = DeformConvReLU(channels, groups)
        self.conv_offset_mask = nn.Conv2d(channels, 27 * groups, 3, padding=1)
        nn.init.zeros_(self.conv_offset_mask.weight)   # starts as a plain (grouped) conv
        nn.init.zeros_(self.conv_offset_mask.bias)

    def offset_and_mask(self, offset_features: torch.Tensor) -> tuple:
        """[B, C, H, W] -> offset [B, 18 G, H, W], mask [B, 9 G, H, W] in (0, 1)."""
        raw = self.conv_offset_mask(offset_features)
        offset, mask = raw.split([raw.shape[1] * 2 // 3, raw.shape[1] // 3], dim=1)
        return offset, torch.sigmoid(mask)

    def forward(self, x: torch.Tensor, offset_features: torch.Tensor) -> torch.Tensor:
        """x = up(F_{l+1}) [B, C, H, W] -> the aligned map [B, C, H, W]."""
        return self.deform_conv(x, *self.offset_and_mask(offset_features))


class FaPNAlignment:
    """FaPN in RT-DETR's hybrid encoder (the authors' "exp3"): `attach` replaces `input_proj` with
    `feature_selection` and adds `offset` and `feature_align`, one per top-down fusion."""

    def __init__(self, groups: int = 8):
        self.groups = groups

    def attach(self, encoder):
        dim, fusions = encoder.hidden_dim, len(encoder.in_channels) - 1
        del encoder.input_proj
        encoder.feature_selection = nn.ModuleList(FeatureSelectionModule(c, dim) for c in encoder.in_channels)
        encoder.feature_align = nn.ModuleList(FeatureAlign(dim, self.groups) for _ in range(fusions))
        encoder.offset = nn.ModuleList(offset_fusion(dim) for _ in range(fusions))
        encoder.alignment = self
        return encoder

    def project(self, encoder, feats):
        """C_i -> FSM_i(C_i) [B, hidden_dim, H_i, W_i]."""
        return [fsm(f) for fsm, f in zip(encoder.feature_selection, feats)]

    def align(self, encoder, j: int, feat_high: torch.Tensor, feat_low: torch.Tensor) -> torch.Tensor:
        """FAM: up(F_{l+1}) aligned to P_l, [B, C, 2h, 2w]."""
        upsampled = upsample_2x(feat_high, "nearest")
        offset_features = encoder.offset[j](torch.cat([feat_low, 2 * upsampled], dim=1))
        return encoder.feature_align[j](upsampled, offset_features)

    def fuse(self, encoder, j: int, feat_high: torch.Tensor, feat_low: torch.Tensor) -> torch.Tensor:
        """F_{l+1} [B, C, h, w], P_l [B, C, 2h, 2w] -> the CSP block's output on [aligned, P_l]."""
        aligned = self.align(encoder, j, feat_high, feat_low)
        return encoder.fpn_blocks[j](torch.cat([aligned, feat_low], dim=1))
