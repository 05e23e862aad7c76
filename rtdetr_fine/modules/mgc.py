"""MGC: the multi-level global context of A2-FPN (Hu et al., CVPR 2021, Eq. 1-6) in RT-DETR's hybrid
encoder, as the FINE authors re-implemented and ran it for the FINE paper's Table 2
(HyungseopLee/FINE-FPN, FINE_to_RT-DETR-PyTorch: `MultiLevelGlobalContext` in `prior_works.py`,
active in their `hybrid_encoder.py` at HEAD; their R18 log v1_r18vd_12e_coco_MGC: 21,134,736
trainable parameters).

`mgc` replaces the input projections (`input_proj`, and there is no BatchNorm after it): it maps
the backbone's maps [C_3, C_4, C_5] to the three 256-channel maps AIFI and CCFF take. Everything
after it is the official encoder. Per level l (c_l input channels, n_l = 256, 192, 128 entities):

  * collector (Eq. 1): entities E = semantic_entities[l](F) [B, n, H, W], embeddings
    V = feature_embeddings[l](F) [B, 256, H, W]; attention A = softmax over HW of
    sqrt(c_l) * s; context_l = V A^T [B, 256, n];
  * graph reasoning (Eq. 4-5): r_l = gcn_l(context_l) + context_l, R = [r_0, r_1, r_2] along the
    entities [B, 256, 576], G = gcn(R) + R (gcn: 1x1 Conv1d 256 -> 64 -> 64 -> 256, ReLU between);
  * distributor (Eq. 6): the level's slice C of G; S = softmax over the entities of
    normalize(Q)^T normalize(C), Q = context_query[l](F); output = context_output[l](C S^T) +
    residual_proj[l](F). No norms, no activations.

Kept as the authors wrote it: the similarity s is their einsum 'bni,bci->bni' of the L2-normalised
entities and features, s[b, k, p] = e[b, k, p] * sum_c f[b, c, p], which is not the cosine
similarity of Eq. 1 (the channel sum is taken over the features alone); the distributor weighs the
unnormalised C. Their orthogonality loss on `semantic_entities` (Eq. 2) is computed and then
discarded (not returned, not added to the loss), so it is not computed here.
"""
import torch
import torch.nn.functional as F
from torch import nn


def gcn(channels: int) -> nn.Sequential:
    """Graph convolution over entities [B, C, n] -> [B, C, n]: 1x1 Conv1d C -> C/4 -> C/4 -> C, ReLU between."""
    return nn.Sequential(nn.Conv1d(channels, channels // 4, 1), nn.ReLU(), nn.Conv1d(channels // 4, channels // 4, 1),
                         nn.ReLU(), nn.Conv1d(channels // 4, channels, 1))


def entity_attention(features: torch.Tensor, entities: torch.Tensor) -> torch.Tensor:
    """The collector's attention: features [B, c, H, W], entities [B, n, H, W] -> [B, n, H*W], a softmax
    over the positions of sqrt(c) * normalize(E)[k, p] * sum_c normalize(F)[c, p] (the authors' einsum)."""
    features = F.normalize(features, dim=1).flatten(2)              # [B, c, HW]
    entities = F.normalize(entities, dim=1).flatten(2)              # [B, n, HW]
    similarity = entities * features.sum(dim=1, keepdim=True)       # 'bni,bci->bni'
    return torch.softmax(similarity * features.shape[1] ** 0.5, dim=2)


def read_context(queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """The distributor's attention read-out: queries [B, C, H, W], context [B, C, n] -> [B, C, H, W]."""
    q = F.normalize(queries.flatten(2), dim=1)                                       # [B, C, HW]
    weights = torch.softmax(q.transpose(1, 2) @ F.normalize(context, dim=1), dim=2)  # [B, HW, n]
    return (context @ weights.transpose(1, 2)).view_as(queries)


class MultiLevelGlobalContext(nn.Module):
    """Backbone maps [B, c_l, H_l, W_l] (l = 0..L-1) -> [B, out_channels, H_l, W_l] each."""

    def __init__(self, in_channels, out_channels: int = 256):
        super().__init__()
        self.entity_counts = [64 * (4 - l) for l in range(len(in_channels))]   # 256, 192, 128
        self.semantic_entities = nn.ModuleList(
            nn.Conv2d(c, n, 1, bias=False) for c, n in zip(in_channels, self.entity_counts))
        self.feature_embeddings = nn.ModuleList(nn.Conv2d(c, out_channels, 1, bias=False) for c in in_channels)
        self.single_level_gcns = nn.ModuleList(gcn(out_channels) for _ in in_channels)
        self.multi_level_gcn = gcn(out_channels)
        self.context_query = nn.ModuleList(nn.Conv2d(c, out_channels, 1, bias=False) for c in in_channels)
        self.context_output = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 1, bias=False) for _ in in_channels)
        self.residual_proj = nn.ModuleList(nn.Conv2d(c, out_channels, 1, bias=False) for c in in_channels)

    def collect(self, feats) -> list:
        """Eq. 1: one context [B, out_channels, n_l] per level."""
        contexts = []
        for f, entities, embed in zip(feats, self.semantic_entities, self.feature_embeddings):
            attention = entity_attention(f, entities(f))                          # [B, n, HW]
            contexts.append(embed(f).flatten(2) @ attention.transpose(1, 2))       # [B, C, n]
        return contexts

    def reason(self, contexts) -> torch.Tensor:
        """Eq. 4-5: the global context G [B, out_channels, sum n_l]."""
        refined = torch.cat([g(c) + c for g, c in zip(self.single_level_gcns, contexts)], dim=2)
        return self.multi_level_gcn(refined) + refined

    def distribute(self, feats, global_context: torch.Tensor) -> list:
        """Eq. 6: each level reads its slice of G."""
        slices = global_context.split(self.entity_counts, dim=2)
        return [output(read_context(query(f), context)) + residual(f) for f, context, query, output, residual
                in zip(feats, slices, self.context_query, self.context_output, self.residual_proj)]

    def forward(self, feats) -> list:
        return self.distribute(feats, self.reason(self.collect(feats)))


class MGCAlignment:
    """MGC in RT-DETR's hybrid encoder (active in the authors' code at HEAD): `attach` replaces
    `input_proj` with `mgc`."""

    def attach(self, encoder):
        del encoder.input_proj
        encoder.mgc = MultiLevelGlobalContext(encoder.in_channels, encoder.hidden_dim)
        encoder.alignment = self
        return encoder

    def project(self, encoder, feats):
        """C_i -> [B, hidden_dim, H_i, W_i], every level seeing the global context of all."""
        return encoder.mgc(feats)
