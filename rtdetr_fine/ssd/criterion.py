"""torchvision's SSD loss behind this repo's criterion interface (see model.py for the label convention)."""
import torch
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.ssd import SSD
from torchvision.ops import box_convert, box_iou

from .model import BOX_CODER_WEIGHTS


def to_ssd_targets(targets: list[dict]) -> list[dict]:
    """Our targets -> torchvision's: boxes xyxy (normalised, like the default boxes), labels + 1."""
    return [{"boxes": box_convert(t["boxes"], "cxcywh", "xyxy"), "labels": t["labels"] + 1} for t in targets]


class SSDCriterion(nn.Module):
    """torchvision's SSD loss (SSD paper Eq. 1-3): default boxes matched at IoU >= iou_thresh
    (plus each ground truth's best box), smooth-L1 on the encoded offsets of the matches (loss_loc),
    cross-entropy over the matches and the hardest negatives, (1 - positive_fraction) /
    positive_fraction of them per positive (loss_conf); both divided by the number of matches.

    Returns {name: weight * term} for the names in weight_dict ('loss_loc', 'loss_conf').
    """

    def __init__(self, weight_dict: dict[str, float], iou_thresh: float = 0.5, positive_fraction: float = 0.25):
        super().__init__()
        self.weight_dict = dict(weight_dict)
        # the attributes torchvision's SSD.compute_loss reads from `self`
        self.box_coder = det_utils.BoxCoder(weights=BOX_CODER_WEIGHTS)
        self.proposal_matcher = det_utils.SSDMatcher(iou_thresh)
        self.neg_to_pos_ratio = (1.0 - positive_fraction) / positive_fraction

    def match(self, anchors: Tensor, gt_boxes: Tensor) -> Tensor:
        """Index of the matched ground truth per default box, -1 for background ([A])."""
        if gt_boxes.numel() == 0:
            return torch.full((anchors.shape[0],), -1, dtype=torch.int64, device=anchors.device)
        return self.proposal_matcher(box_iou(gt_boxes, anchors))

    def forward(self, outputs: dict[str, Tensor], targets: list[dict]) -> dict[str, Tensor]:
        anchors = outputs["anchors"]
        ssd_targets = to_ssd_targets(targets)
        matched = [self.match(anchors, t["boxes"]) for t in ssd_targets]
        # torchvision's loss, run with this module as `self` (it reads box_coder and neg_to_pos_ratio)
        terms = SSD.compute_loss(self, ssd_targets, outputs, [anchors] * len(ssd_targets), matched)
        named = {"loss_loc": terms["bbox_regression"], "loss_conf": terms["classification"]}
        return {k: self.weight_dict[k] * v for k, v in named.items() if k in self.weight_dict}
