"""FINE: Feature Interaction NEtwork, cross-level attention that refines P_l with F_{l+1}.

The low-level map P_l (query) attends to the higher-level fused map F_{l+1}
(key and value). The attention output A_l then reweights P_l element-wise
(Eq. 2 / Eq. 8), and the refined map replaces P_l in the fusion network.

Three attention variants (Table 3 of the FINE paper):
  * "quadratic":          softmax attention at full resolution, O(N_l * N_{l+1}).
  * "linear":             l1-kernel linear attention + RMSNorm (Eq. 3-5, App. E),
                          O(N_l + N_{l+1}).
  * "linear_bottleneck":  the same linear attention on average-pooled maps
                          (Eq. 6), with A_l upsampled bilinearly back to P_l (Eq. 7).

Two modulations:
  * "multiply": P~_l = P_l * A_l                (Eq. 2 / Eq. 8).
  * "residual": P~_l = P_l + P_l * A_l          (revised FINE, "residual element-wise
                                                 modulation").
"""
import torch
import torch.nn.functional as F
from torch import nn

from .position_encoding import sincos_2d

ATTENTION_MODES = ("quadratic", "linear", "linear_bottleneck")
MODULATIONS = ("multiply", "residual")


def l1_kernel(x, eps=1e-6):
    """The l1-norm feature map phi(.) of SimA (Eq. 3, App. E).

    Each channel is divided by its l1 norm taken over the tokens, as SimA
    (Koohpayegani & Pirsiavash, 2024) normalises Q and K. The FINE paper's
    App. E writes phi(Q_i) = Q_i / (|Q_i|_1 + eps); we follow SimA's axis, the
    one the FINE paper cites for this kernel.

    x: [B, heads, N, d] -> [B, heads, N, d], sum_n |phi(x)[b, h, n, c]| <= 1.
    """
    return x / (x.abs().sum(dim=-2, keepdim=True) + eps)


def linear_attention(q, k, v, eps=1e-6):
    """Raw kernelised attention O = phi(Q) (phi(K)^T V), App. E, without Delta^-1.

    The product is taken right to left (Eq. 5), so the cost is
    O((N_q + N_k) d^2) instead of O(N_q N_k d). The 1/Delta normaliser of Eq. 4-5
    is dropped on purpose (Qin et al., 2022a, App. E): it has unbounded
    gradients for small similarities. The caller applies RMSNorm instead.

    q: [B, heads, N_q, d], k, v: [B, heads, N_k, d] -> [B, heads, N_q, d].
    """
    q, k = l1_kernel(q, eps), l1_kernel(k, eps)
    context = k.transpose(-2, -1) @ v  # [B, heads, d, d]
    return q @ context                 # [B, heads, N_q, d]


def softmax_attention(q, k, v):
    """Standard attention softmax(Q K^T / sqrt(d)) V (Eq. 1 with Sim = exp).

    q: [B, heads, N_q, d], k, v: [B, heads, N_k, d] -> [B, heads, N_q, d].
    """
    return F.scaled_dot_product_attention(q, k, v)


class RMSNorm(nn.Module):
    """RMSNorm (Zhang & Sennrich, 2019) over the last dim, App. E:
    O / sqrt(mean(O^2) + eps) * weight.

    Written from primitives because nn.RMSNorm has no ONNX opset-17 export.
    The statistics are taken in at least float32, so low-precision inputs under
    autocast do not lose the mean of squares.
    """

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        stats_dtype = torch.promote_types(x.dtype, torch.float32)
        x_wide = x.to(stats_dtype)
        normed = x_wide * torch.rsqrt(x_wide.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight


def split_heads(x, num_heads):
    """[B, N, C] -> [B, heads, N, C / heads]."""
    return x.unflatten(-1, (num_heads, -1)).transpose(1, 2)


def merge_heads(x):
    """[B, heads, N, d] -> [B, N, heads * d]."""
    return x.transpose(1, 2).flatten(2)


class CrossLevelAttention(nn.Module):
    """Multi-head cross-level attention of App. D: Q from P_l, K and V from F_{l+1}.

    A_l = Concat(A^(1), ..., A^(n_h)) W_O, with each head either softmax
    attention ("quadratic") or RMSNorm(phi(Q)(phi(K)^T V)) ("linear"). The
    RMSNorm weight has head_dim entries and is shared by the heads.
    """

    def __init__(self, dim, num_heads=8, linear=True):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"channels ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.linear = linear
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.head_norm = RMSNorm(dim // num_heads) if linear else None

    def forward(self, query, key, value):
        # query: [B, N_q, C]; key, value: [B, N_k, C]
        q = split_heads(self.q_proj(query), self.num_heads)  # [B, heads, N_q, d]
        k = split_heads(self.k_proj(key), self.num_heads)    # [B, heads, N_k, d]
        v = split_heads(self.v_proj(value), self.num_heads)  # [B, heads, N_k, d]
        if self.linear:
            heads = self.head_norm(linear_attention(q, k, v))
        else:
            heads = softmax_attention(q, k, v)
        return self.out_proj(merge_heads(heads))             # [B, N_q, C]


def flatten_tokens(x):
    """[B, C, H, W] -> [B, H*W, C], row-major over (H, W).

    Written as a channels-last permute (not flatten + transpose) so onnxruntime can
    fold it into the reorder out of its blocked conv layout.
    """
    return x.permute(0, 2, 3, 1).flatten(1, 2)


def with_position(tokens, height, width, dim):
    """Add the fixed 2-D sin-cos embedding of an H x W grid to [B, H*W, dim] tokens."""
    pos = sincos_2d(height, width, dim, device=tokens.device)  # [1, H*W, dim]
    return tokens + pos.to(tokens.dtype)


def upsample_bilinear(x, size, fixed_size=False):
    """Eq. 7: bilinear upsampling of [B, C, h, w] to `size` = (H, W), align_corners=False.

    By default F.interpolate to `size`: one ONNX Resize that follows the input size.
    With fixed_size and an integer factor on both axes (RT-DETR's 2 and 4) it is the
    same Resize with constant scales, preceded by a 1x1 average pool, which is the
    identity. Together they let onnxruntime run the upsampling in its blocked conv
    layout, starting from the low-resolution map: the modulated map then feeds the
    next convolution without layout conversions at full resolution (~1 ms less per
    640x640 image on CPU than a plain Resize here).
    """
    if fixed_size:
        out_h, out_w = (int(v) for v in size)
        in_h, in_w = (int(v) for v in x.shape[-2:])
        if out_h % in_h == 0 and out_w % in_w == 0:
            x = F.avg_pool2d(x, 1)
            return F.interpolate(x, scale_factor=(out_h // in_h, out_w // in_w), mode="bilinear",
                                 align_corners=False)
        size = (out_h, out_w)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def avg_pool(x, factor):
    """Down(.) of Eq. 6: average pooling by an integer factor fixed at construction."""
    if factor == 1:
        return x
    return F.avg_pool2d(x, kernel_size=factor, stride=factor)


class FINE(nn.Module):
    """Refines P_l with F_{l+1}: returns P~_l with P_l's shape [B, C, H, W].

    Per module: Q/K/V/out projections (C x C, `num_heads` heads), sin-cos position
    embeddings added to the query and key inputs, post-norm residual with the
    (pooled) low-level tokens, a `ffn_ratio` x GELU feed-forward block with a
    post-norm residual, then the modulation of P_l by A_l.

    `low_pool` / `high_pool` are the integer average-pooling factors of the
    spatial bottleneck (Eq. 6) that bring P_l and F_{l+1} to the coarsest
    pyramid level's size; e.g. in RT-DETR (strides 8/16/32) the module refining
    P4 with F5 uses (2, 1) and the one refining P3 with F4 uses (4, 2). They are
    fixed integers, so no shape-dependent Python logic enters tracing/export.
    They must be 1 for "quadratic" and "linear", which run at full resolution
    by definition (ValueError otherwise).

    If `high_channels` != `low_channels`, a 1x1 conv projects F_{l+1} to P_l's
    channels first (App. C); otherwise there is no projection.

    `fixed_size` (attribute, default False) is for exporting at one input size.
    Feature-map sizes are then read as Python ints, so a traced graph holds the
    position embeddings as constants (no sin/cos at run time), upsamples by
    constant scales and runs the feed-forward block as 1x1 convolutions (see
    `upsample_bilinear`, `feed_forward`): the forms onnxruntime runs fastest on
    CPU. The outputs are the same; the exported graph then runs only at the
    traced size. Leave it off to export with dynamic spatial axes; export_onnx.py
    turns it on while tracing the full (fixed-size) detector.
    """

    def __init__(self, low_channels, high_channels, num_heads=8, ffn_ratio=4, attention="linear_bottleneck",
                 modulation="multiply", low_pool=1, high_pool=1, dropout=0.0):
        super().__init__()
        if attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {attention!r}")
        if modulation not in MODULATIONS:
            raise ValueError(f"modulation must be one of {MODULATIONS}, got {modulation!r}")
        for name, factor in (("low_pool", low_pool), ("high_pool", high_pool)):
            if not isinstance(factor, int) or factor < 1:
                raise ValueError(f"{name} must be a positive int, got {factor!r}")
        if attention != "linear_bottleneck" and (low_pool, high_pool) != (1, 1):
            raise ValueError(f"low_pool/high_pool apply only to attention='linear_bottleneck'; "
                             f"got {low_pool}/{high_pool} with attention={attention!r}")
        self.attention = attention
        self.modulation = modulation
        self.low_pool = low_pool
        self.high_pool = high_pool

        self.dim = dim = low_channels
        self.high_proj = nn.Conv2d(high_channels, dim, 1) if high_channels != dim else nn.Identity()
        self.attn = CrossLevelAttention(dim, num_heads, linear=attention != "quadratic")
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_ratio * dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(ffn_ratio * dim, dim),
        )
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.fixed_size = False

    def attention_map(self, low, high):
        """A_l at the attention resolution: [B, C, H / low_pool, W / low_pool]."""
        high = self.high_proj(high)                              # [B, C, h, w]
        low = avg_pool(low, self.low_pool)                       # [B, C, H', W']
        high = avg_pool(high, self.high_pool)                    # [B, C, h', w']
        height, width = low.shape[-2:]
        high_size = high.shape[-2:]
        if self.fixed_size:
            height, width, high_size = int(height), int(width), tuple(int(s) for s in high_size)
        low_grid = low.permute(0, 2, 3, 1)                       # [B, H', W', C]
        low_tokens, high_tokens = low_grid.flatten(1, 2), flatten_tokens(high)  # [B, N, C]
        attended = self.attn(with_position(low_tokens, height, width, self.dim),
                             with_position(high_tokens, *high_size, self.dim),
                             high_tokens).unflatten(1, (height, width))  # [B, H', W', C]
        # Residuals and LayerNorms run on the 4-D channels-last grid: the same numbers as on
        # [B, N, C] tokens, but onnxruntime then keeps Add + LayerNormalization (fast) instead
        # of fusing them into its CPU SkipLayerNormalization kernel (~5x slower here).
        a = self.norm1(low_grid + self.dropout1(attended))
        a = self.norm2(a + self.dropout2(self.feed_forward(a)))
        return a.permute(0, 3, 1, 2)                             # [B, C, H', W']

    def feed_forward(self, grid):
        """self.ffn on a [B, H', W', C] grid.

        With fixed_size the linear layers run as 1x1 convolutions of the channels-first
        map: the same weights and numbers, but onnxruntime runs them with its blocked
        conv kernels, ~20% faster than its Gemm at these sizes.
        """
        if not self.fixed_size:
            return self.ffn(grid)
        x = grid.permute(0, 3, 1, 2)
        for layer in self.ffn:
            if isinstance(layer, nn.Linear):
                x = F.conv2d(x, layer.weight[:, :, None, None], layer.bias)
            else:
                x = layer(x)                                     # GELU / dropout: element-wise
        return x.permute(0, 2, 3, 1)

    def modulate(self, low, a):
        """Eq. 8 (P_l * A_l) or the revised FINE's residual form P_l + P_l * A_l."""
        if self.modulation == "residual":
            return low + low * a
        return low * a

    def modulation_map(self, low, high):
        """A_l at P_l's resolution [B, C, H, W] (upsampled by Eq. 7 when pooled)."""
        a = self.attention_map(low, high)
        if self.low_pool != 1:
            a = upsample_bilinear(a, low.shape[-2:], self.fixed_size)  # Eq. 7
        return a

    def forward(self, low, high):
        """low P_l [B, C, H, W], high F_{l+1} [B, C_h, h, w] -> refined P_l [B, C, H, W]."""
        return self.modulate(low, self.modulation_map(low, high))
