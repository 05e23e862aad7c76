"""RT-DETR's decoder: query selection from the encoder memory, then deformable-attention layers
with iterative box refinement (RT-DETR Sec. 4.3)."""
import copy
from collections import OrderedDict

import torch
from torch import nn

from ..nn.deformable_attention import MSDeformableAttention
from .denoising import contrastive_denoising_groups
from ..nn.layers import MLP, bias_init_with_prob, get_activation, inverse_sigmoid


class TransformerDecoderLayer(nn.Module):
    """Self-attention over queries, deformable cross-attention to the memory, feed-forward; post-norm."""

    def __init__(self, d_model=256, n_head=8, dim_feedforward=1024, dropout=0.0, activation="relu",
                 n_levels=4, n_points=4):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, n_head, dropout=dropout, batch_first=True)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross_attn = MSDeformableAttention(d_model, n_head, n_levels, n_points)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.activation = get_activation(activation)
        self.dropout3 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout4 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, tgt, reference_points, memory, spatial_shapes, attn_mask=None, query_pos=None):
        q = k = tgt + query_pos
        attn, _ = self.self_attn(q, k, value=tgt, attn_mask=attn_mask, need_weights=False)
        tgt = self.norm1(tgt + self.dropout1(attn))
        cross = self.cross_attn(tgt + query_pos, reference_points, memory, spatial_shapes)
        tgt = self.norm2(tgt + self.dropout2(cross))
        ffn = self.linear2(self.dropout3(self.activation(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout4(ffn))


class TransformerDecoder(nn.Module):
    """Stack of decoder layers; each refines the boxes of the previous one (Deformable DETR)."""

    def __init__(self, layer, num_layers, eval_idx=-1):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.num_layers = num_layers
        self.eval_idx = eval_idx if eval_idx >= 0 else num_layers + eval_idx

    def forward(self, tgt, ref_points_unact, memory, spatial_shapes, bbox_head, score_head, query_pos_head,
                attn_mask=None):
        """Returns boxes [layers, B, Q, 4] and logits [layers, B, Q, classes] (only eval_idx's in eval)."""
        output = tgt
        boxes, logits = [], []
        ref_detached = ref_points_unact.sigmoid()
        ref_points = None
        for i, layer in enumerate(self.layers):
            query_pos = query_pos_head(ref_detached)
            output = layer(output, ref_detached.unsqueeze(2), memory, spatial_shapes, attn_mask, query_pos)
            inter_ref = torch.sigmoid(bbox_head[i](output) + inverse_sigmoid(ref_detached))
            if self.training:
                logits.append(score_head[i](output))
                # layer i's box loss flows into layer i-1's (undetached) refinement, as in RT-DETR
                boxes.append(inter_ref if i == 0 else torch.sigmoid(bbox_head[i](output) + inverse_sigmoid(ref_points)))
            elif i == self.eval_idx:
                logits.append(score_head[i](output))
                boxes.append(inter_ref)
                break
            ref_points = inter_ref
            ref_detached = inter_ref.detach() if self.training else inter_ref
        return torch.stack(boxes), torch.stack(logits)


class RTDETRTransformer(nn.Module):
    """Encoder maps -> detections: {'pred_logits' [B, Q, classes], 'pred_boxes' [B, Q, 4] cxcywh}."""

    def __init__(self, num_classes: int = 80, hidden_dim: int = 256, num_queries: int = 300,
                 feat_channels=(512, 1024, 2048), num_levels: int = 3, num_decoder_points: int = 4, nhead: int = 8,
                 num_decoder_layers: int = 6, dim_feedforward: int = 1024, dropout: float = 0.0,
                 activation: str = "relu", num_denoising: int = 100, label_noise_ratio: float = 0.5,
                 box_noise_scale: float = 1.0, learnt_init_query: bool = False, eval_idx: int = -1,
                 eps: float = 1e-2, aux_loss: bool = True):
        super().__init__()
        if len(feat_channels) > num_levels:
            raise ValueError("decoder.feat_channels has more entries than decoder.num_levels")
        self.hidden_dim, self.nhead = hidden_dim, nhead
        self.num_levels, self.num_classes, self.num_queries = num_levels, num_classes, num_queries
        self.eps, self.num_decoder_layers = eps, num_decoder_layers
        self.aux_loss = aux_loss
        self.num_denoising, self.label_noise_ratio, self.box_noise_scale = num_denoising, label_noise_ratio, box_noise_scale
        self.learnt_init_query = learnt_init_query

        self.input_proj = self._build_input_proj(list(feat_channels))
        layer = TransformerDecoderLayer(hidden_dim, nhead, dim_feedforward, dropout, activation, num_levels,
                                        num_decoder_points)
        self.decoder = TransformerDecoder(layer, num_decoder_layers, eval_idx)
        if num_denoising > 0:
            self.denoising_class_embed = nn.Embedding(num_classes + 1, hidden_dim, padding_idx=num_classes)
        if learnt_init_query:
            self.tgt_embed = nn.Embedding(num_queries, hidden_dim)
        self.query_pos_head = MLP(4, 2 * hidden_dim, hidden_dim, num_layers=2)
        self.enc_output = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.LayerNorm(hidden_dim))
        self.enc_score_head = nn.Linear(hidden_dim, num_classes)
        self.enc_bbox_head = MLP(hidden_dim, hidden_dim, 4, num_layers=3)
        self.dec_score_head = nn.ModuleList(nn.Linear(hidden_dim, num_classes) for _ in range(num_decoder_layers))
        self.dec_bbox_head = nn.ModuleList(MLP(hidden_dim, hidden_dim, 4, 3) for _ in range(num_decoder_layers))
        self._reset_parameters()

    def _build_input_proj(self, feat_channels):
        proj = nn.ModuleList()
        for c in feat_channels:
            proj.append(nn.Sequential(OrderedDict([
                ("conv", nn.Conv2d(c, self.hidden_dim, 1, bias=False)), ("norm", nn.BatchNorm2d(self.hidden_dim))])))
        c = feat_channels[-1]
        for _ in range(self.num_levels - len(feat_channels)):   # extra levels: stride-2 3x3 convs
            proj.append(nn.Sequential(OrderedDict([
                ("conv", nn.Conv2d(c, self.hidden_dim, 3, 2, padding=1, bias=False)),
                ("norm", nn.BatchNorm2d(self.hidden_dim))])))
            c = self.hidden_dim
        return proj

    def _reset_parameters(self):
        bias = bias_init_with_prob(0.01)
        nn.init.constant_(self.enc_score_head.bias, bias)
        nn.init.constant_(self.enc_bbox_head.layers[-1].weight, 0)
        nn.init.constant_(self.enc_bbox_head.layers[-1].bias, 0)
        for cls_head, box_head in zip(self.dec_score_head, self.dec_bbox_head):
            nn.init.constant_(cls_head.bias, bias)
            nn.init.constant_(box_head.layers[-1].weight, 0)
            nn.init.constant_(box_head.layers[-1].bias, 0)
        nn.init.xavier_uniform_(self.enc_output[0].weight)
        if self.learnt_init_query:
            nn.init.xavier_uniform_(self.tgt_embed.weight)
        nn.init.xavier_uniform_(self.query_pos_head.layers[0].weight)
        nn.init.xavier_uniform_(self.query_pos_head.layers[1].weight)

    def flatten_memory(self, feats):
        """Project each map and flatten all levels into one token sequence [B, sum(H*W), C]."""
        proj = [self.input_proj[i](f) for i, f in enumerate(feats)]
        for i in range(len(feats), self.num_levels):
            proj.append(self.input_proj[i](feats[-1] if i == len(feats) else proj[-1]))
        spatial_shapes = [(p.shape[2], p.shape[3]) for p in proj]
        memory = torch.cat([p.flatten(2).permute(0, 2, 1) for p in proj], dim=1)
        return memory, spatial_shapes

    def generate_anchors(self, spatial_shapes, grid_size=0.05, device=None):
        """Anchor per memory token: centre of its cell, size grid_size * 2^level; as logits.

        Returns anchors [1, S, 4] (inf where invalid) and valid_mask [1, S, 1]; computed in
        float32 as the official implementation does.
        """
        anchors = []
        for lvl, (h, w) in enumerate(spatial_shapes):
            gy, gx = torch.meshgrid(torch.arange(h, dtype=torch.float32, device=device),
                                    torch.arange(w, dtype=torch.float32, device=device), indexing="ij")
            xy = (torch.stack([gx, gy], -1).unsqueeze(0) + 0.5) / torch.tensor([w, h], dtype=torch.float32,
                                                                             device=device)
            wh = torch.ones_like(xy) * grid_size * (2.0 ** lvl)
            anchors.append(torch.cat([xy, wh], -1).reshape(-1, h * w, 4))
        anchors = torch.cat(anchors, 1)
        valid_mask = ((anchors > self.eps) & (anchors < 1 - self.eps)).all(-1, keepdim=True)
        anchors = torch.log(anchors / (1 - anchors))
        anchors = torch.where(valid_mask, anchors, torch.inf)
        return anchors, valid_mask

    def select_queries(self, memory, spatial_shapes, dn_embed=None, dn_bbox=None):
        """Top-k encoder tokens (by best class score) become the decoder's initial queries and boxes.

        Returns target [B, (D+)K, C], reference boxes as logits [B, (D+)K, 4] (detached),
        and the encoder head's top-k boxes / logits for the auxiliary loss.
        """
        if memory.shape[1] < self.num_queries:
            levels = [(int(h), int(w)) for h, w in spatial_shapes]   # plain ints also while tracing for export
            raise ValueError(f"the input gives {int(memory.shape[1])} encoder tokens (levels {levels}), fewer "
                             f"than decoder.num_queries={self.num_queries}: use a larger input size or fewer queries")
        anchors, valid_mask = self.generate_anchors(spatial_shapes, device=memory.device)
        memory = valid_mask.to(memory.dtype) * memory
        output_memory = self.enc_output(memory)
        enc_logits = self.enc_score_head(output_memory)                           # [B, S, classes]
        enc_coords_unact = self.enc_bbox_head(output_memory) + anchors            # [B, S, 4]
        _, topk = torch.topk(enc_logits.max(-1).values, self.num_queries, dim=1)  # [B, K]
        ref_unact = enc_coords_unact.gather(1, topk.unsqueeze(-1).repeat(1, 1, 4))
        enc_topk_boxes = ref_unact.sigmoid()
        enc_topk_logits = enc_logits.gather(1, topk.unsqueeze(-1).repeat(1, 1, enc_logits.shape[-1]))
        if self.learnt_init_query:
            target = self.tgt_embed.weight.unsqueeze(0).tile([memory.shape[0], 1, 1])
        else:
            target = output_memory.gather(1, topk.unsqueeze(-1).repeat(1, 1, output_memory.shape[-1])).detach()
        if dn_bbox is not None:
            ref_unact = torch.cat([dn_bbox, ref_unact], 1)
            target = torch.cat([dn_embed, target], 1)
        return target, ref_unact.detach(), enc_topk_boxes, enc_topk_logits

    def forward(self, feats, targets=None):
        memory, spatial_shapes = self.flatten_memory(feats)
        dn_embed = dn_bbox = attn_mask = dn_meta = None
        if self.training and self.num_denoising > 0:
            if targets is None:
                raise ValueError("training-mode forward needs targets (for the denoising queries)")
            dn_embed, dn_bbox, attn_mask, dn_meta = contrastive_denoising_groups(
                targets, self.num_classes, self.num_queries, self.denoising_class_embed, self.num_denoising,
                self.label_noise_ratio, self.box_noise_scale)
        target, ref_unact, enc_boxes, enc_logits = self.select_queries(memory, spatial_shapes, dn_embed, dn_bbox)
        boxes, logits = self.decoder(target, ref_unact, memory, spatial_shapes, self.dec_bbox_head,
                                     self.dec_score_head, self.query_pos_head, attn_mask=attn_mask)
        if dn_meta is not None:
            dn_boxes, boxes = torch.split(boxes, dn_meta["dn_num_split"], dim=2)
            dn_logits, logits = torch.split(logits, dn_meta["dn_num_split"], dim=2)
        out = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.training and self.aux_loss:
            out["aux_outputs"] = _pairs(logits[:-1], boxes[:-1]) + _pairs([enc_logits], [enc_boxes])
            if dn_meta is not None:
                out["dn_aux_outputs"] = _pairs(dn_logits, dn_boxes)
                out["dn_meta"] = dn_meta
        return out


def _pairs(logits, boxes):
    return [{"pred_logits": a, "pred_boxes": b} for a, b in zip(logits, boxes)]
