"""Contrastive denoising groups (DINO, Zhang et al. 2023) as RT-DETR builds them for training."""
import torch
from torchvision.ops import box_convert

from ..nn.layers import inverse_sigmoid


def contrastive_denoising_groups(targets, num_classes, num_queries, class_embed, num_denoising=100,
                                 label_noise_ratio=0.5, box_noise_scale=1.0):
    """Noised copies of the ground truth as extra decoder queries.

    Each group holds every image's boxes twice: a positive copy (noise inside the box's
    half-size) and a negative copy (noise between one and two half-sizes). Returns
    (query embeddings [B, D, C], reference boxes as logits [B, D, 4], attention mask
    [D+Q, D+Q] with True = blocked, meta) or four Nones when the batch has no boxes.
    """
    if num_denoising <= 0:
        return None, None, None, None
    num_gts = [len(t["labels"]) for t in targets]
    max_gt = max(num_gts)
    if max_gt == 0:
        return None, None, None, None
    device = targets[0]["labels"].device
    num_group = max(num_denoising // max_gt, 1)
    bs = len(num_gts)

    query_class = torch.full([bs, max_gt], num_classes, dtype=torch.int32, device=device)
    query_bbox = torch.zeros([bs, max_gt, 4], device=device, dtype=targets[0]["boxes"].dtype)
    pad_gt_mask = torch.zeros([bs, max_gt], dtype=torch.bool, device=device)
    for i, n in enumerate(num_gts):
        if n > 0:
            query_class[i, :n] = targets[i]["labels"]
            query_bbox[i, :n] = targets[i]["boxes"]
            pad_gt_mask[i, :n] = True
    # [B, 2*max_gt*num_group]: per group, max_gt positives then max_gt negatives
    query_class = query_class.tile([1, 2 * num_group])
    query_bbox = query_bbox.tile([1, 2 * num_group, 1])
    pad_gt_mask = pad_gt_mask.tile([1, 2 * num_group])
    negative_mask = torch.zeros([bs, max_gt * 2, 1], device=device, dtype=query_bbox.dtype)
    negative_mask[:, max_gt:] = 1
    negative_mask = negative_mask.tile([1, num_group, 1])
    positive_mask = (1 - negative_mask).squeeze(-1) * pad_gt_mask
    dn_positive_idx = torch.nonzero(positive_mask)[:, 1]
    dn_positive_idx = torch.split(dn_positive_idx, [n * num_group for n in num_gts])
    num_dn = int(max_gt * 2 * num_group)

    if label_noise_ratio > 0:
        flip = torch.rand_like(query_class, dtype=torch.float) < (label_noise_ratio * 0.5)
        new_label = torch.randint_like(flip, 0, num_classes, dtype=query_class.dtype)
        query_class = torch.where(flip & pad_gt_mask, new_label, query_class)

    if box_noise_scale > 0:
        known = box_convert(query_bbox, "cxcywh", "xyxy")
        diff = torch.tile(query_bbox[..., 2:] * 0.5, [1, 1, 2]) * box_noise_scale
        sign = torch.randint_like(query_bbox, 0, 2) * 2.0 - 1.0
        part = torch.rand_like(query_bbox)
        part = (part + 1.0) * negative_mask + part * (1 - negative_mask)
        known = (known + part * sign * diff).clip(min=0.0, max=1.0)
        query_bbox = inverse_sigmoid(box_convert(known, "xyxy", "cxcywh"))

    query_embed = class_embed(query_class)

    size = num_dn + num_queries
    attn_mask = torch.zeros([size, size], dtype=torch.bool, device=device)
    attn_mask[num_dn:, :num_dn] = True            # matching queries never see the ground truth
    for g in range(num_group):                    # groups do not see each other
        rows = slice(max_gt * 2 * g, max_gt * 2 * (g + 1))
        attn_mask[rows, max_gt * 2 * (g + 1):num_dn] = True
        attn_mask[rows, :max_gt * 2 * g] = True
    meta = {"dn_positive_idx": dn_positive_idx, "dn_num_group": num_group, "dn_num_split": [num_dn, num_queries]}
    return query_embed, query_bbox, attn_mask, meta
