"""Model outputs -> per-image detections in pixels (RT-DETR's focal-loss post-processing)."""
import torch
from torch import nn
from torchvision.ops import box_convert


class PostProcessor(nn.Module):
    """Top-k over all (query, class) scores; boxes cxcywh-normalised -> xyxy pixels.

    `orig_target_sizes` is [B, 2] as (width, height). In deploy mode forward returns the
    tuple (labels, boxes, scores) for export; otherwise a list of dicts per image, with labels
    mapped through `label_to_category` when given (remap_mscoco_category: COCO category ids).
    """

    def __init__(self, num_classes: int = 80, num_top_queries: int = 300, label_to_category=None):
        super().__init__()
        self.num_classes, self.num_top_queries = num_classes, num_top_queries
        self.label_to_category = None if label_to_category is None else tuple(label_to_category)
        self.deploy_mode = False

    def forward(self, outputs, orig_target_sizes):
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        boxes = box_convert(boxes, in_fmt="cxcywh", out_fmt="xyxy")
        boxes = boxes * orig_target_sizes.repeat(1, 2).unsqueeze(1).to(boxes.dtype)       # [B, Q, 4] pixels
        scores, index = torch.topk(logits.sigmoid().flatten(1), self.num_top_queries, dim=-1)
        labels = index % self.num_classes
        index = index // self.num_classes
        boxes = boxes.gather(1, index.unsqueeze(-1).repeat(1, 1, boxes.shape[-1]))
        if self.deploy_mode:
            return labels, boxes, scores
        if self.label_to_category is not None:
            lut = torch.tensor(self.label_to_category, device=labels.device)
            labels = lut[labels]
        return [{"labels": l, "boxes": b, "scores": s} for l, b, s in zip(labels, boxes, scores)]

    def deploy(self):
        self.eval()
        self.deploy_mode = True
        return self
