"""FINE: Feature Interaction NEtwork, cross-level attention that refines P_l with F_{l+1}.

The low-level map P_l (query) attends to the higher-level fused map F_{l+1}
(key and value). The attention output A_l then reweights P_l element-wise
(Eq. 2 / Eq. 8), and the refined map replaces P_l in the fusion network.

This is the module the FINE authors released (HyungseopLee/FINE-FPN,
`FeatureInteractionNEtowrk`), with their parameter names, so their weights load
as they are: Q/K/V/out projections, an RMSNorm per head (`attn_norm`), a 4x GELU
feed-forward block (`linear1`, `linear2`) and two LayerNorms that sit on the
branch, before each residual add (`norm1`, `norm2`).

Three attention variants (Table 3 of the FINE paper):
  * "quadratic":          softmax attention at full resolution, O(N_l * N_{l+1}).
  * "linear":             l1-kernel linear attention + RMSNorm (Eq. 3-5, App. E),
                          O(N_l + N_{l+1}).
  * "linear_bottleneck":  the same linear attention on average-pooled maps
                          (Eq. 6), with A_l upsampled bilinearly back to P_l (Eq. 7).

Two modulations:
  * "multiply": P~_l = P_l * A_l                (Eq. 2 / Eq. 8; the authors' module).
  * "residual": P~_l = P_l + P_l * A_l          (revised FINE, "residual element-wise
                                                 modulation").

FINEAlignment wires the modules into RT-DETR's hybrid encoder as the authors' RT-DETR does.
"""
import torch
import torch.nn.functional as F
from torch import nn

from ..nn.layers import upsample_2x
from ..nn.position_encoding import sincos_2d

ATTENTION_MODES = ("quadratic", "linear", "linear_bottleneck")
MODULATIONS = ("multiply", "residual")


def l1_kernel(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The l1-norm feature map phi(.) of SimA (Eq. 3, App. E): each channel divided by
    its l1 norm over the tokens, x / max(sum_n |x|, eps) (F.normalize semantics, as the
    authors' module computes it).

    x: [B, heads, N, d] -> [B, heads, N, d], sum_n |phi(x)[b, h, n, c]| <= 1.
    """
    return F.normalize(x, p=1.0, dim=-2, eps=eps)


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Kernelised attention O = phi(Q) (phi(K)^T V) of App. E, without Delta^-1.

    The product is taken right to left (Eq. 5), so the cost is
    O((N_q + N_k) d^2) instead of O(N_q N_k d). The 1/Delta normaliser of Eq. 4-5
    is dropped on purpose (Qin et al., 2022a, App. E): it has unbounded
    gradients for small similarities. The caller applies RMSNorm instead.

    q: [B, heads, N_q, d], k, v: [B, heads, N_k, d] -> [B, heads, N_q, d].
    """
    q, k = l1_kernel(q, eps), l1_kernel(k, eps)
    context = k.transpose(-2, -1) @ v  # [B, heads, d, d]
    return q @ context                 # [B, heads, N_q, d]


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Standard attention softmax(Q K^T / sqrt(d)) V (Eq. 1 with Sim = exp).

    q: [B, heads, N_q, d], k, v: [B, heads, N_k, d] -> [B, heads, N_q, d].
    """
    return F.scaled_dot_product_attention(q, k, v)


class RMSNorm(nn.Module):
    """RMSNorm (Zhang & Sennrich, 2019) over the last dim, App. E:
    x / sqrt(mean(x^2) + eps) * weight, with nn.RMSNorm's default eps (the machine
    epsilon of the dtype the statistics are computed in) unless `eps` is given.

    Written from primitives because nn.RMSNorm has no ONNX opset-17 export. The
    statistics are taken in at least float32: under autocast, a bfloat16 mean of
    squares would lose precision, and bfloat16's epsilon (2^-7) would swamp the
    small mean squares of the l1-normalised attention output.
    """

    def __init__(self, dim: int, eps: float | None = None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stats_dtype = torch.promote_types(x.dtype, torch.float32)
        eps = torch.finfo(stats_dtype).eps if self.eps is None else self.eps
        x_wide = x.to(stats_dtype)
        normed = x_wide * torch.rsqrt(x_wide.pow(2).mean(dim=-1, keepdim=True) + eps)
        return normed.to(x.dtype) * self.weight


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[B, N, C] -> [B, heads, N, C / heads]."""
    return x.unflatten(-1, (num_heads, -1)).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, heads, N, d] -> [B, N, heads * d]."""
    return x.transpose(1, 2).flatten(2)


def flatten_tokens(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H*W, C], row-major over (H, W)."""
    return x.flatten(2).transpose(1, 2)


def position_embedding(x: torch.Tensor) -> torch.Tensor:
    """RT-DETR's fixed 2-D sin-cos embedding (temperature 10000) of x's H x W grid:
    [B, C, H, W] -> [1, H*W, C] in x's dtype."""
    height, width = x.shape[-2:]
    return sincos_2d(height, width, x.shape[1], device=x.device).to(x.dtype)


def avg_pool(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Down(.) of Eq. 6: average pooling by an integer factor fixed at construction."""
    if factor == 1:
        return x
    return F.avg_pool2d(x, kernel_size=factor, stride=factor)


def upsample_bilinear(x: torch.Tensor, size) -> torch.Tensor:
    """Up(.) of Eq. 7: bilinear upsampling of [B, C, h, w] to `size` (H, W), align_corners=False."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class FINE(nn.Module):
    """Refines P_l with F_{l+1}: returns P~_l with P_l's shape [B, C, H, W].

    `low_pool` / `high_pool` are the integer average-pooling factors of the
    spatial bottleneck (Eq. 6) that bring P_l and F_{l+1} to the coarsest
    pyramid level's size; e.g. in RT-DETR (strides 8/16/32) the module refining
    P4 with F5 uses (2, 1) and the one refining P3 with F4 uses (4, 2). They must
    be 1 for "quadratic" and "linear", which run at full resolution by definition
    (ValueError otherwise).

    If `high_channels` != `low_channels`, a 1x1 conv `high_proj` projects F_{l+1} to
    P_l's channels first (App. C); otherwise there is no projection (RT-DETR: 256/256).
    "quadratic" has no `attn_norm`: the softmax normalises its attention itself.
    """

    def __init__(self, low_channels: int, high_channels: int, num_heads: int = 16, ffn_ratio: int = 4,
                 attention: str = "linear_bottleneck", modulation: str = "multiply", low_pool: int = 1,
                 high_pool: int = 1, dropout: float = 0.0):
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
        if low_channels % num_heads != 0:
            raise ValueError(f"channels ({low_channels}) must be divisible by num_heads ({num_heads})")
        self.attention, self.modulation = attention, modulation
        self.low_pool, self.high_pool = low_pool, high_pool
        self.num_heads = num_heads
        dim = low_channels

        if high_channels != dim:
            self.high_proj = nn.Conv2d(high_channels, dim, 1)
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        if attention != "quadratic":
            self.attn_norm = RMSNorm(dim // num_heads)
        self.linear1 = nn.Linear(dim, ffn_ratio * dim)
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn_ratio * dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def cross_attention(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """Multi-head cross-level attention (Eq. 1-5, App. D/E): Q from P_l, K and V from
        F_{l+1}, each map's tokens with its own grid's position embedding added.

        low [B, C, h, w], high [B, C, h', w'] -> [B, h*w, C] (after out_proj).
        """
        low_in = flatten_tokens(low) + position_embedding(low)        # [B, N_q, C]
        high_in = flatten_tokens(high) + position_embedding(high)     # [B, N_k, C]
        q = split_heads(self.q_proj(low_in), self.num_heads)          # [B, heads, N_q, d]
        k = split_heads(self.k_proj(high_in), self.num_heads)         # [B, heads, N_k, d]
        v = split_heads(self.v_proj(high_in), self.num_heads)         # [B, heads, N_k, d]
        if self.attention == "quadratic":
            heads = softmax_attention(q, k, v)
        else:
            heads = self.attn_norm(linear_attention(q, k, v))
        return self.out_proj(merge_heads(heads))                      # [B, N_q, C]

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The 4x GELU feed-forward block."""
        return self.linear2(self.dropout(self.activation(self.linear1(x))))

    def attention_map(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """A_l at the attention resolution: [B, C, H / low_pool, W / low_pool].

        The LayerNorms sit on the branch, before each residual add:
        x = P + norm1(attention), A = x + norm2(FFN(x)), P being P_l's (pooled) tokens.
        """
        if hasattr(self, "high_proj"):
            high = self.high_proj(high)                               # [B, C, h, w]
        low = avg_pool(low, self.low_pool)                            # [B, C, H', W'] (Eq. 6)
        high = avg_pool(high, self.high_pool)                         # [B, C, h', w']
        x = flatten_tokens(low) + self.dropout1(self.norm1(self.cross_attention(low, high)))
        a = x + self.dropout2(self.norm2(self.feed_forward(x)))       # [B, H'*W', C]
        return a.transpose(1, 2).unflatten(2, low.shape[-2:])         # [B, C, H', W']

    def modulation_map(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """A_l at P_l's resolution [B, C, H, W] (upsampled by Eq. 7 when pooled)."""
        a = self.attention_map(low, high)
        if self.low_pool != 1:
            a = self.upsample(a, low.shape[-2:])
        return a

    def upsample(self, a: torch.Tensor, size) -> torch.Tensor:
        """Up(.) of Eq. 7 (a method: the ONNX export traces it in onnxruntime's faster form of the same
        values, rtdetr_fine/deploy.py fixed_size_forms)."""
        return upsample_bilinear(a, size)

    def modulate(self, low: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Eq. 8 (P_l * A_l) or the revised FINE's residual form P_l + P_l * A_l."""
        if self.modulation == "residual":
            return low + low * a
        return low * a

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """low P_l [B, C, H, W], high F_{l+1} [B, C_h, h, w] -> refined P_l [B, C, H, W]."""
        return self.modulate(low, self.modulation_map(low, high))


class FINEAlignment:
    """FINE in RT-DETR's hybrid encoder, as the FINE authors' RT-DETR wires it ("Ours" in their
    top-down loop): before top-down fusion j, P_l is refined by `encoder.fine[j]` with F_{l+1}
    (Eq. 2/8), and F_{l+1} is upsampled with `upsample` ("bilinear" in their code; the official
    baseline's is "nearest") for the CSP block's input [up(F_{l+1}), refined P_l].

    `attach(encoder)` adds `encoder.fine`, one module per top-down fusion in the order the loop
    visits them (coarse to fine); with "linear_bottleneck" each pools both maps to the coarsest one.
    """

    def __init__(self, num_heads: int = 16, ffn_ratio: int = 4, attention: str = "linear_bottleneck",
                 modulation: str = "multiply", upsample: str = "bilinear"):
        self.num_heads, self.ffn_ratio = num_heads, ffn_ratio
        self.attention, self.modulation, self.upsample = attention, modulation, upsample

    def module(self, encoder, idx: int) -> FINE:
        """The FINE module refining level idx-1 with level idx."""
        bottleneck = self.attention == "linear_bottleneck"
        strides, dim = encoder.feat_strides, encoder.hidden_dim
        return FINE(dim, dim, num_heads=self.num_heads, ffn_ratio=self.ffn_ratio, attention=self.attention,
                    modulation=self.modulation, low_pool=strides[-1] // strides[idx - 1] if bottleneck else 1,
                    high_pool=strides[-1] // strides[idx] if bottleneck else 1)

    def attach(self, encoder):
        levels = len(encoder.in_channels)
        encoder.fine = nn.ModuleList(self.module(encoder, idx) for idx in range(levels - 1, 0, -1))
        encoder.alignment = self
        return encoder

    def fuse(self, encoder, j: int, feat_high: torch.Tensor, feat_low: torch.Tensor) -> torch.Tensor:
        """F_{l+1} [B, C, h, w], P_l [B, C, 2h, 2w] -> the CSP block's output [B, C, 2h, 2w]."""
        refined = encoder.fine[j](feat_low, feat_high)                                 # Eq. 2/8
        return encoder.fpn_blocks[j](torch.cat([upsample_2x(feat_high, self.upsample), refined], dim=1))
