"""RT-DETR's set criterion: varifocal classification loss + L1 + GIoU on matched boxes,
summed over the final, auxiliary (decoder layers, encoder) and denoising outputs."""
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert, box_iou, generalized_box_iou


class SetCriterion(nn.Module):
    def __init__(self, matcher: nn.Module, weight_dict: dict, losses=("vfl", "boxes"), alpha: float = 0.75,
                 gamma: float = 2.0, num_classes: int = 80):
        super().__init__()
        unknown = set(losses) - {"vfl", "boxes"}
        if unknown:
            raise ValueError(f"criterion.losses: unknown loss(es) {sorted(unknown)}; expected 'vfl', 'boxes'")
        self.matcher, self.weight_dict, self.losses = matcher, dict(weight_dict), list(losses)
        self.alpha, self.gamma, self.num_classes = alpha, gamma, num_classes

    def loss_vfl(self, outputs, targets, indices, num_boxes):
        """Varifocal loss (VarifocalNet): BCE towards IoU-valued targets on matched queries,
        focal-down-weighted negatives: w = alpha * p^gamma * (1 - t) + q."""
        idx = _src_permutation_idx(indices)
        src_boxes = outputs["pred_boxes"][idx]
        target_boxes = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)], 0).to(src_boxes.dtype)
        ious = box_iou(box_convert(src_boxes, "cxcywh", "xyxy"), box_convert(target_boxes, "cxcywh", "xyxy"))
        ious = torch.diag(ious).detach()

        logits = outputs["pred_logits"]                                       # [B, Q, classes]
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        target_classes[idx] = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)]).to(torch.int64)
        onehot = F.one_hot(target_classes, num_classes=self.num_classes + 1)[..., :-1]
        score = torch.zeros(logits.shape[:2], dtype=logits.dtype, device=logits.device)
        score[idx] = ious.to(score.dtype)
        target_score = score.unsqueeze(-1) * onehot
        pred_score = logits.sigmoid().detach()
        weight = self.alpha * pred_score.pow(self.gamma) * (1 - onehot) + target_score
        loss = F.binary_cross_entropy_with_logits(logits, target_score, weight=weight, reduction="none")
        return {"loss_vfl": loss.mean(1).sum() * logits.shape[1] / num_boxes}

    def loss_boxes(self, outputs, targets, indices, num_boxes):
        """L1 and (1 - GIoU) on matched boxes, normalised by the number of boxes."""
        idx = _src_permutation_idx(indices)
        src = outputs["pred_boxes"][idx]
        tgt = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)], 0).to(src.dtype)
        loss_bbox = F.l1_loss(src, tgt, reduction="none").sum() / num_boxes
        giou = torch.diag(generalized_box_iou(box_convert(src, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy")))
        return {"loss_bbox": loss_bbox, "loss_giou": (1 - giou).sum() / num_boxes}

    def weighted_losses(self, outputs, targets, indices, num_boxes, suffix=""):
        losses = {}
        for name in self.losses:
            terms = self.loss_vfl(outputs, targets, indices, num_boxes) if name == "vfl" \
                else self.loss_boxes(outputs, targets, indices, num_boxes)
            losses.update({k + suffix: v * self.weight_dict[k] for k, v in terms.items() if k in self.weight_dict})
        return losses

    def forward(self, outputs, targets):
        """outputs: the model's dict (at least pred_logits/pred_boxes); targets: list of
        {labels [N], boxes [N, 4] cxcywh normalised}. Returns the weighted loss terms."""
        main = {k: v for k, v in outputs.items() if "aux" not in k and k != "dn_meta"}
        num_boxes = _average_num_boxes(targets, outputs["pred_logits"].device)
        losses = self.weighted_losses(main, targets, self.matcher(main, targets), num_boxes)
        losses.update(self.auxiliary_losses(outputs, targets, num_boxes))
        return losses

    def auxiliary_losses(self, outputs: dict, targets: list, num_boxes) -> dict:
        """The auxiliary (earlier decoder layers, encoder proposals) and denoising terms."""
        losses = {}
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            losses.update(self.weighted_losses(aux, targets, self.matcher(aux, targets), num_boxes, f"_aux_{i}"))
        if "dn_aux_outputs" in outputs:
            meta = outputs["dn_meta"]
            indices = denoising_indices(meta, targets)
            for i, aux in enumerate(outputs["dn_aux_outputs"]):
                losses.update(self.weighted_losses(aux, targets, indices, num_boxes * meta["dn_num_group"], f"_dn_{i}"))
        return losses


def _src_permutation_idx(indices):
    batch = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    src = torch.cat([src for src, _ in indices])
    return batch, src


def _average_num_boxes(targets, device):
    """Boxes per process averaged over all processes (at least 1), as a float."""
    n = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(n)
        n = n / dist.get_world_size()
    return torch.clamp(n, min=1).item()


def denoising_indices(meta, targets):
    """The denoising queries are matched by construction: positive query k of group g <-> box k."""
    indices = []
    for positive_idx, t in zip(meta["dn_positive_idx"], targets):
        n = len(t["labels"])
        if n > 0:
            gt_idx = torch.arange(n, dtype=torch.int64, device=positive_idx.device).tile(meta["dn_num_group"])
            indices.append((positive_idx, gt_idx))
        else:
            empty = torch.zeros(0, dtype=torch.int64, device=positive_idx.device)
            indices.append((empty, empty))
    return indices
