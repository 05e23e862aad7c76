"""CFSAM: Cross-layer Feature Self-Attention Module (Xie et al., 2025, Sec. 3, Fig. 2, Eq. 1-5).

A plug-in between a detector's multi-scale feature maps and its head: every map's tokens attend to
the tokens of every map, and each map comes back with its own size and channel count, so the head
is unchanged. For maps F_1..F_n with C_1..C_n channels:

  1. local feature extraction (Sec. 3.1):   L_i = Conv1x1(Conv3x3(F_i)), C_i -> C channels
  2. flatten + concatenate (Eq. 1):         L = [flat(L_1), ..., flat(L_n)]       [B, C, N], N = sum H_i W_i
  3. Partition (Eq. 2):                     Part = 2 interleaved subsequences (every other token);
                                            a length that does not divide is resized linearly first
  4. Transformer (Eq. 3):                   self-attention within each subsequence only
  5. Combine (Eq. 4):                       back to the original order (and length): L'  [B, C, N]
  6. fusion + restoration (Eq. 5):          R = Conv1x1(Concat(L, L')), 2C -> C; split per map,
                                            reshape to H_i x W_i, and a 1x1 conv C -> C_i.

What the paper leaves open and what we chose (the defaults of the `cfsam` config section):
  * C = 256 (the paper: "uniformly adjust the channel number to 256 dimensions").
  * The 3x3 conv keeps each map's channel count (C_i -> C_i) and is followed by BatchNorm + ReLU;
    the 1x1 conv C_i -> C is a plain linear projection (MobileViT's local representation, which
    CFSAM's local-extractor / partition-transformer / concat-fusion layout follows).
  * Transformer unit: 3 pre-norm encoder layers (LayerNorm -> 8-head self-attention -> residual,
    LayerNorm -> FFN 256 -> 512 -> 256 with GELU -> residual), a final LayerNorm; no dropout.
    One unit, its weights shared by the Part subsequences (Eq. 3 applies the same Transformer to
    every LP(p)); the subsequences are folded into the batch.
  * No position encoding: the 3x3 convs already encode position, and the module must take any
    map size (RT-DETR trains at 480-800 px). MobileViT, which adds none either, is the model here.
  * Fusion: the 1x1 conv 2C -> C, then BatchNorm + ReLU; restoration: a plain 1x1 conv C -> C_i
    (Eq. 5's "Recover" must give each map its own channel count back; the paper does not say how).
  * The paper restores an interpolated sequence after the fusion conv; we restore it at Combine,
    so the shortcut branch of the fusion carries the exact L (the only difference: L itself
    skips the resize round trip). SSD300 at 300 px (N = 1940) and RT-DETR at 640 px (N = 8400)
    never resize.

Ablations (the paper's Sec. 4.4; config keys cfsam.components and cfsam.maps). The paper adds its
three components one at a time (Table 5) without saying what stands in for a missing one; we remove
a component together with its weights and pass its input on unchanged:
  * components: lfe      local feature extraction only: R_i = Restore_i(L_i), the 3x3 + 1x1 convs and
                         the channel restore (no Transformer, no concatenation, no fusion conv);
  * components: lfe_gfe  + the partitioned Transformer, whose output goes to Recover directly:
                         R = Recover(L') (no concatenation with L, no fusion conv);
  * components: full     Eq. 5 as above (the default).
Table 6 runs the module on some of the maps (the first three, 38/19/10, or the last three, 5/3/1):
cfsam_on_maps wraps it in OnMaps, which hands it those maps and passes the others through.

Cost check against the paper's Table 4 (SSD300 on VOC, 21 classes; the paper's "GFLOPs" are
multiply-accumulates: torchvision's SSD300 has 62.75 GFLOPs at 2 x MAC = 31.37 G MAC, the
paper's 31.37, and 26,285,486 parameters, the paper's 26.29M). With these choices SSD300 + CFSAM
has 45,375,918 parameters (paper: 45.16M) and 45.24 G MAC (paper: 45.22); the module's 19.09M
parameters are mostly the 3x3 convs of the two large maps (11.8M). Measured with
rtdetr_fine.evaluation.flops (docs/cfsam_ssd300.md).
"""
from typing import Sequence

import torch
from torch import Tensor, nn

from ..nn.layers import ConvNormLayer

COMPONENTS = ("lfe", "lfe_gfe", "full")   # the rows of the paper's Table 5, each adding to the one before


def resize_tokens(tokens: Tensor, length: int) -> Tensor:
    """Linear interpolation along the token axis (the paper's "bilinear" resize of the sequence).

    [B, N, C] -> [B, length, C], sampled at positions i (N - 1) / (length - 1): F.interpolate's
    mode="linear", align_corners=True (the first and last token are kept). Written as a gather and
    a lerp with indices computed from the sizes, so an exported graph holds them as constants
    (onnx Resize derives the output length from a float scale and can be one token short).
    """
    n = tokens.shape[1]
    position = torch.linspace(0, n - 1, length, dtype=torch.float64)            # [length], in input tokens
    low = position.floor().long().clamp(max=max(n - 2, 0))
    high = (low + 1).clamp(max=n - 1)
    weight = (position - low).to(tokens.device, tokens.dtype).view(1, -1, 1)
    return torch.lerp(tokens[:, low.to(tokens.device)], tokens[:, high.to(tokens.device)], weight)


def partition(tokens: Tensor, parts: int) -> Tensor:
    """Eq. 2: [B, N, C] -> [B * parts, M / parts, C]; subsequence p holds tokens p, p + parts, p + 2 parts, ...

    M = N rounded up to a multiple of `parts`; when M != N the sequence is first resized to M
    tokens (resize_tokens). Row b * parts + p of the result is subsequence p of image b.
    """
    n, channels = tokens.shape[1], tokens.shape[2]
    padded = (n + parts - 1) // parts * parts          # (not -(-n // parts): traced, ONNX Div truncates)
    if padded != n:
        tokens = resize_tokens(tokens, padded)
    interleaved = tokens.reshape(-1, padded // parts, parts, channels)       # [B, M/parts, parts, C]
    return interleaved.transpose(1, 2).reshape(-1, padded // parts, channels)


def combine(subsequences: Tensor, parts: int, length: int) -> Tensor:
    """Eq. 4, the inverse of partition: [B * parts, M / parts, C] -> [B, length, C] in the original order.

    When partition resized the sequence (length not a multiple of `parts`), it is resized back; then the
    round trip is exact for sequences linear along the tokens and approximate otherwise (no linear
    resize is undone exactly by another). Lengths that divide round-trip exactly.
    """
    per_part, channels = subsequences.shape[1], subsequences.shape[2]
    grouped = subsequences.reshape(-1, parts, per_part, channels)           # [B, parts, M/parts, C]
    tokens = grouped.transpose(1, 2).reshape(-1, parts * per_part, channels)
    if parts * per_part != length:
        tokens = resize_tokens(tokens, length)
    return tokens


def local_feature_extractor(in_channels: int, hidden_dim: int) -> nn.Sequential:
    """Sec. 3.1: 3x3 conv (C_i -> C_i) + BatchNorm + ReLU, then a 1x1 conv C_i -> hidden_dim."""
    return nn.Sequential(ConvNormLayer(in_channels, in_channels, 3, act="relu"),
                         nn.Conv2d(in_channels, hidden_dim, 1))


def transformer_unit(hidden_dim: int, num_layers: int, num_heads: int, dim_feedforward: int,
                     dropout: float) -> nn.TransformerEncoder:
    """Eq. 3's Transformer: pre-norm encoder layers on [B, N, C] sequences, then a LayerNorm."""
    layer = nn.TransformerEncoderLayer(hidden_dim, num_heads, dim_feedforward, dropout, activation="gelu",
                                       batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(hidden_dim), enable_nested_tensor=False)


class CFSAM(nn.Module):
    """Cross-layer self-attention over n maps: list of [B, C_i, H_i, W_i] -> list of the same shapes."""

    def __init__(self, in_channels: Sequence[int], hidden_dim: int = 256, num_layers: int = 3, num_heads: int = 8,
                 dim_feedforward: int = 512, parts: int = 2, dropout: float = 0.0, components: str = "full"):
        super().__init__()
        if parts < 1:
            raise ValueError(f"CFSAM: parts must be >= 1, got {parts}")
        if components not in COMPONENTS:
            raise ValueError(f"CFSAM: components must be one of {COMPONENTS}, got {components!r}")
        self.in_channels, self.parts, self.components = list(in_channels), parts, components
        self.local = nn.ModuleList(local_feature_extractor(c, hidden_dim) for c in self.in_channels)
        # an ablated component is absent (no weights): its input goes on unchanged (module docstring)
        self.transformer = transformer_unit(hidden_dim, num_layers, num_heads, dim_feedforward, dropout) \
            if components != "lfe" else None
        self.fuse = nn.Sequential(nn.Conv1d(2 * hidden_dim, hidden_dim, 1, bias=False), nn.BatchNorm1d(hidden_dim),
                                  nn.ReLU(inplace=True)) if components == "full" else None
        self.restore = nn.ModuleList(nn.Conv2d(hidden_dim, c, 1) for c in self.in_channels)

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        if len(feats) != len(self.local):
            raise ValueError(f"CFSAM was built for {len(self.local)} maps, got {len(feats)}")
        local = [extract(f) for extract, f in zip(self.local, feats)]         # n x [B, C, H_i, W_i]
        sizes = [tuple(x.shape[-2:]) for x in local]
        tokens = torch.cat([x.flatten(2) for x in local], dim=2)             # L: [B, C, N], Eq. 1
        if self.transformer is None:                                         # components: lfe
            return self.recover(tokens, sizes)
        enhanced = self.global_attention(tokens)                             # L': [B, C, N], Eq. 2-4
        if self.fuse is None:                                                # components: lfe_gfe
            return self.recover(enhanced, sizes)
        fused = self.fuse(torch.cat([tokens, enhanced], dim=1))              # [B, 2C, N] -> [B, C, N], Eq. 5
        return self.recover(fused, sizes)

    def global_attention(self, tokens: Tensor) -> Tensor:
        """Eq. 2-4: Partition -> Transformer (within each subsequence) -> Combine. [B, C, N] -> [B, C, N]."""
        sequence = tokens.transpose(1, 2)                                    # [B, N, C]
        subsequences = self.transformer(partition(sequence, self.parts))     # [B * parts, N / parts, C]
        return combine(subsequences, self.parts, sequence.shape[1]).transpose(1, 2)

    def recover(self, fused: Tensor, sizes: Sequence[tuple[int, int]]) -> list[Tensor]:
        """Eq. 5's Recover: split [B, C, N] into the maps' tokens, reshape to H_i x W_i, 1x1 conv C -> C_i."""
        pieces = torch.split(fused, [h * w for h, w in sizes], dim=2)
        # reshape with -1 (not unflatten) keeps the batch dimension symbolic in an exported graph
        return [restore(piece.reshape(-1, piece.shape[1], h, w)) for restore, piece, (h, w) in
                zip(self.restore, pieces, sizes)]


class OnMaps(nn.Module):
    """A cross-layer module on some of the maps (the CFSAM paper's Table 6): list of num_maps maps ->
    the same list with maps[i] for i in `indices` replaced by the module's outputs; the others unchanged."""

    def __init__(self, module: nn.Module, indices: Sequence[int], num_maps: int):
        super().__init__()
        check_map_indices(indices, num_maps)
        self.module, self.indices, self.num_maps = module, list(indices), num_maps

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        if len(feats) != self.num_maps:
            raise ValueError(f"OnMaps was built for {self.num_maps} maps, got {len(feats)}")
        out = list(feats)
        for i, refined in zip(self.indices, self.module([feats[i] for i in self.indices])):
            out[i] = refined
        return out


def check_map_indices(indices: Sequence[int], num_maps: int) -> None:
    if not indices or any(not 0 <= i < num_maps for i in indices) or list(indices) != sorted(set(indices)):
        raise ValueError(f"map indices must be increasing, in 0..{num_maps - 1}, got {list(indices)}")


def cfsam_on_maps(in_channels: Sequence[int], maps: Sequence[int] | None = None, **kwargs) -> nn.Module:
    """CFSAM(**kwargs) over all the maps (maps None, or every index: the module itself, state dict
    unchanged) or over the maps `maps` only (OnMaps)."""
    if maps is None or list(maps) == list(range(len(in_channels))):
        return CFSAM(in_channels, **kwargs)
    check_map_indices(maps, len(in_channels))
    return OnMaps(CFSAM([in_channels[i] for i in maps], **kwargs), maps, len(in_channels))
