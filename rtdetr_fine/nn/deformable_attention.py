"""Multi-scale deformable attention (Deformable DETR, Zhu et al. 2021), pure PyTorch via grid_sample."""
import math

import torch
import torch.nn.functional as F
from torch import nn


def deformable_attention_core(value, spatial_shapes, sampling_locations, attention_weights):
    """Bilinearly sample each level at the given locations and take the weighted sum.

    value [B, S, heads, c] (S = sum of H_l*W_l, row-major per level);
    sampling_locations [B, Q, heads, L, P, 2] as (x, y) in [0, 1];
    attention_weights [B, Q, heads, L, P]  ->  output [B, Q, heads*c].
    """
    b, _, heads, c = value.shape
    _, q, _, levels, points, _ = sampling_locations.shape
    value_list = value.split([h * w for h, w in spatial_shapes], dim=1)
    grids = 2 * sampling_locations - 1                                    # grid_sample's [-1, 1]
    sampled = []
    for level, (h, w) in enumerate(spatial_shapes):
        value_l = value_list[level].flatten(2).permute(0, 2, 1).reshape(b * heads, c, h, w)
        grid_l = grids[:, :, :, level].permute(0, 2, 1, 3, 4).flatten(0, 1)  # [B*heads, Q, P, 2]
        sampled.append(F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros",
                                     align_corners=False))                # [B*heads, c, Q, P]
    weights = attention_weights.permute(0, 2, 1, 3, 4).reshape(b * heads, 1, q, levels * points)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1)    # [B*heads, c, Q]
    return out.reshape(b, heads * c, q).permute(0, 2, 1)


class MSDeformableAttention(nn.Module):
    """Each query attends to `num_points` sampled points per level around its reference box."""

    def __init__(self, embed_dim=256, num_heads=8, num_levels=4, num_points=4):
        super().__init__()
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.num_levels, self.num_points = num_levels, num_points
        self.head_dim = embed_dim // num_heads
        if self.head_dim * num_heads != embed_dim:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        total_points = num_heads * num_levels * num_points
        self.sampling_offsets = nn.Linear(embed_dim, total_points * 2)
        self.attention_weights = nn.Linear(embed_dim, total_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self._reset_parameters()

    def _reset_parameters(self):
        """Offsets start on a ring of directions per head, k-th point at distance k (Deformable DETR)."""
        nn.init.constant_(self.sampling_offsets.weight, 0)
        thetas = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True).values
        grid = grid.reshape(self.num_heads, 1, 1, 2).tile([1, self.num_levels, self.num_points, 1])
        grid *= torch.arange(1, self.num_points + 1).reshape(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.constant_(self.attention_weights.weight, 0)
        nn.init.constant_(self.attention_weights.bias, 0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0)

    def forward(self, query, reference_points, value, spatial_shapes):
        """query [B, Q, C]; reference_points [B, Q, 1 or L, 4] (cxcywh in [0,1]); value [B, S, C]."""
        b, q = query.shape[:2]
        value = self.value_proj(value).reshape(b, value.shape[1], self.num_heads, self.head_dim)
        offsets = self.sampling_offsets(query).reshape(
            b, q, self.num_heads, self.num_levels, self.num_points, 2)
        weights = self.attention_weights(query).reshape(b, q, self.num_heads, self.num_levels * self.num_points)
        weights = weights.softmax(-1).reshape(b, q, self.num_heads, self.num_levels, self.num_points)
        if reference_points.shape[-1] != 4:
            raise ValueError("reference_points must be boxes (cx, cy, w, h)")
        # offsets are in units of half the reference box, spread over num_points rings
        centres = reference_points[:, :, None, :, None, :2]
        half_wh = reference_points[:, :, None, :, None, 2:] * 0.5
        locations = centres + offsets / self.num_points * half_wh
        return self.output_proj(deformable_attention_core(value, spatial_shapes, locations, weights))
