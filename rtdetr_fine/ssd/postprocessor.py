"""torchvision's SSD post-processing behind this repo's post-processor interface (PostProcessor's call
and output; fixed-size tensors in deploy mode for ONNX export)."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.ssd import SSD
from torchvision.ops import batched_nms

from .model import BOX_CODER_WEIGHTS


class SSDPostProcessor(nn.Module):
    """SSD outputs -> per-image detections, with PostProcessor's call and output.

    forward(outputs, orig_target_sizes [B, 2] as (w, h)) -> list of {"labels" (0..num_classes-1, or
    `label_to_category[label]` when given, e.g. COCO category ids), "boxes" xyxy in original-image
    pixels, "scores"}: torchvision's SSD.postprocess_detections (softmax; per class: score > score_thresh, top topk_candidates; NMS per
    class at nms_thresh; the best detections_per_img).

    Deploy mode (export): the same detections as fixed-size tensors labels [B, D], boxes [B, D, 4],
    scores [B, D] (D = detections_per_img), best first; where an image has fewer than D detections
    the remaining rows have score 0 (and box 0).
    """

    def __init__(self, num_classes: int, score_thresh: float = 0.01, nms_thresh: float = 0.45,
                 detections_per_img: int = 200, topk_candidates: int = 400, label_to_category=None):
        super().__init__()
        self.num_classes = num_classes
        self.label_to_category = None if label_to_category is None else tuple(label_to_category)
        self.deploy_mode = False
        # the attributes torchvision's SSD.postprocess_detections reads from `self`
        self.box_coder = det_utils.BoxCoder(weights=BOX_CODER_WEIGHTS)
        self.score_thresh, self.nms_thresh = score_thresh, nms_thresh
        self.detections_per_img, self.topk_candidates = detections_per_img, topk_candidates

    def forward(self, outputs: dict[str, Tensor], orig_target_sizes: Tensor):
        if self.deploy_mode:
            return self.fixed_size_detections(outputs, orig_target_sizes)
        anchors, batch = outputs["anchors"], orig_target_sizes.shape[0]
        # normalised boxes, clipped to the unit square ("image size" (1, 1))
        detections = SSD.postprocess_detections(self, outputs, [anchors] * batch, [(1, 1)] * batch)
        results = []
        for det, size in zip(detections, orig_target_sizes):
            labels = det["labels"] - 1                                   # drop the background index
            if self.label_to_category is not None:
                labels = torch.tensor(self.label_to_category, device=labels.device)[labels]
            boxes = det["boxes"] * size.repeat(2).to(det["boxes"].dtype)  # xyxy pixels of the original image
            results.append({"labels": labels, "boxes": boxes, "scores": det["scores"]})
        return results

    def fixed_size_detections(self, outputs: dict[str, Tensor], orig_target_sizes: Tensor):
        """postprocess_detections for a whole batch with fixed-size outputs (traceable, dynamic batch).

        Candidates: per image and class, the topk_candidates best default boxes; those at or below
        score_thresh stay in the NMS but get score 0 afterwards (a lower-scored box never suppresses
        a higher-scored one, so the detections above the threshold are torchvision's). One NMS call
        over all images and classes (group = image x class).
        """
        logits, offsets, anchors = outputs["cls_logits"], outputs["bbox_regression"], outputs["anchors"]
        num_anchors, classes = anchors.shape[0], logits.shape[-1] - 1
        scores = F.softmax(logits, dim=-1)[..., 1:]                            # [B, A, K], background dropped
        # decode_single takes several boxes per default box ([A, 4 n]): the batch goes there
        boxes = self.box_coder.decode_single(offsets.transpose(0, 1).reshape(num_anchors, -1), anchors)
        boxes = boxes.reshape(num_anchors, -1, 4).transpose(0, 1).clamp(0.0, 1.0)   # [B, A, 4] normalised xyxy

        # sizes derived from the data, not from Python ints, so that the exported batch stays dynamic
        k = min(self.topk_candidates, num_anchors)
        cand_scores, cand_index = scores.transpose(1, 2).topk(k, dim=2)        # [B, K, k]
        class_ids = torch.arange(1, classes + 1, device=logits.device).view(1, -1, 1)
        cand_labels = (torch.zeros_like(cand_index) + class_ids).flatten(1)                 # [B, K k]
        image_index = torch.ones_like(cand_labels).cumsum(0) - 1                             # [B, K k]
        cand_index, cand_scores = cand_index.flatten(1), cand_scores.flatten(1)              # [B, K k]
        cand_boxes = boxes.gather(1, cand_index.unsqueeze(-1).expand(-1, -1, 4))            # [B, K k, 4]

        keep = batched_nms(cand_boxes.reshape(-1, 4), cand_scores.reshape(-1),
                           (image_index * classes + cand_labels - 1).reshape(-1), self.nms_thresh)
        kept = torch.zeros_like(cand_scores.reshape(-1)).scatter(0, keep, 1.0).reshape(cand_scores.shape)
        final_scores = cand_scores * kept * (cand_scores > self.score_thresh)

        top = min(self.detections_per_img, classes * k)
        scores_out, index = final_scores.topk(top, dim=1)                      # [B, D], best first
        labels_out = cand_labels.gather(1, index) - 1
        boxes_out = cand_boxes.gather(1, index.unsqueeze(-1).expand(-1, -1, 4)) * (scores_out > 0).unsqueeze(-1)
        boxes_out = boxes_out * orig_target_sizes.repeat(1, 2).unsqueeze(1).to(boxes_out.dtype)
        return labels_out, boxes_out, scores_out

    def deploy(self):
        self.eval()
        self.deploy_mode = True
        return self
