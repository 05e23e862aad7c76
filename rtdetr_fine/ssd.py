"""SSD300 (Liu et al., ECCV 2016) from torchvision, in the interfaces train.py / eval.py / export_onnx.py use.

torchvision's `ssd300_vgg16` builds the network (VGG16 feature extractor with the six prediction maps
conv4_3, fc7, conv8_2 .. conv11_2, default boxes, head); its matching, box coding, loss (smooth L1 +
cross-entropy with 3:1 hard negative mining) and post-processing (per-class score threshold, top-k,
NMS) are called as they are. What this file adds is the glue:

  * SSD300:            images [B, 3, H, W] in [0, 1] -> raw head outputs + default boxes; an optional
                       cross-layer module (CFSAM) between the feature extractor and the head.
  * SSDCriterion:      our targets (labels 0..K-1, boxes cxcywh normalised) -> weighted loss terms.
  * SSDPostProcessor:  PostProcessor's call and output (list of labels / xyxy pixel boxes / scores,
                       or fixed-size tensors in deploy mode for ONNX export).

Classes: `num_classes` counts object classes, as everywhere in this repo (20 for VOC, 80 for COCO);
the SSD classifier has num_classes + 1 outputs, index 0 being background (torchvision's
convention), so object label k is SSD class k + 1.

Boxes are handled normalised to [0, 1] (default boxes included). Matching (IoU), box coding
(offsets relative to the default box) and NMS give the same results as torchvision's pixel
boxes up to float rounding: all are invariant to scaling x and y.
"""
import re

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import VGG16_Weights
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection import ssd300_vgg16
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.ssd import SSD
from torchvision.ops import batched_nms, box_convert, box_iou

from .coco_ids import COCO_LABEL_TO_CATEGORY

# ssd300_vgg16's input normalisation: VGG16 (Caffe) weights expect 0-255 pixels minus the mean.
SSD_IMAGE_MEAN = (0.48235, 0.45882, 0.40784)
SSD_IMAGE_STD = (1.0 / 255.0, 1.0 / 255.0, 1.0 / 255.0)
BOX_CODER_WEIGHTS = (10.0, 10.0, 5.0, 5.0)       # torchvision's SSD (the SSD paper's variances 0.1, 0.2)


class SSD300(nn.Module):
    """torchvision's SSD300 network; forward: images [B, 3, H, W] in [0, 1] (300 x 300) ->

    {"cls_logits": [B, A, num_classes + 1], "bbox_regression": [B, A, 4] (box-coder offsets),
     "anchors": [A, 4] default boxes xyxy normalised to [0, 1]}, A = 8732 at 300 x 300.
    `targets` is accepted for the common model(images, targets) call and not used (the loss is
    the criterion's). The default boxes use torchvision's steps (8 .. 300 px), which are meant for
    300 x 300 input; other sizes (>= 268) run, with the box centres drifting off the grid.
    """

    size_divisibility = 1   # any input size the VGG16 extractor takes (>= 268 px); export_onnx reads this
    min_size = 268          # smaller inputs leave conv11_2 without its 3x3 input (configs are checked against it)

    def __init__(self, ssd: SSD, cross_layer: nn.Module | None = None):
        super().__init__()
        self.backbone = ssd.backbone                  # SSDFeatureExtractorVGG: 6 maps
        self.cross_layer = cross_layer                # e.g. CFSAM; None: the plain SSD300
        self.head = ssd.head
        self.anchor_generator = ssd.anchor_generator
        self.register_buffer("image_mean", torch.tensor(SSD_IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(SSD_IMAGE_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor, targets=None) -> dict[str, Tensor]:
        x = (images - self.image_mean) / self.image_std
        feats = list(self.backbone(x).values())       # [B, 512, 38, 38], [B, 1024, 19, 19], ..., [B, 256, 1, 1]
        if self.cross_layer is not None:
            feats = self.cross_layer(feats)           # same shapes
        outputs = self.head(feats)
        outputs["anchors"] = self.default_boxes(images, feats)
        return outputs

    def default_boxes(self, images: Tensor, feats: list[Tensor]) -> Tensor:
        """torchvision's DefaultBoxGenerator for this input size: [A, 4] xyxy, normalised by (W, H)."""
        height, width = images.shape[-2:]
        boxes = self.anchor_generator(ImageList(images, [(height, width)]), feats)[0]
        return boxes / boxes.new_tensor([width, height, width, height])

    def deploy(self):
        """Eval mode (nothing to fuse): what export_onnx.py traces."""
        return self.eval()


def build_torchvision_ssd300(num_classes: int, pretrained_backbone=None) -> SSD:
    """ssd300_vgg16 with num_classes + 1 outputs (background first), no detector weights.

    pretrained_backbone: None (random init: torchvision's xavier), True (torchvision's ImageNet VGG16
    "features" weights, IMAGENET1K_FEATURES, downloaded once into the torch hub cache) or a local
    path / URL of a torchvision vgg16 state dict. With ImageNet weights conv1 stays frozen, as
    ssd300_vgg16 does with them (trainable_backbone_layers=4).
    """
    ssd = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=num_classes + 1)
    if pretrained_backbone:
        source = VGG16_Weights.IMAGENET1K_FEATURES.url if pretrained_backbone is True else pretrained_backbone
        load_vgg16_features(ssd.backbone, read_state_dict(source))
        for p in ssd.backbone.features[:4].parameters():     # conv1_1, conv1_2
            p.requires_grad_(False)
    return ssd


def read_state_dict(source: str) -> dict:
    """A state dict from a local file or a URL (torch hub cache); errors name the source."""
    if str(source).startswith(("http://", "https://")):
        try:
            return torch.hub.load_state_dict_from_url(source, map_location="cpu", weights_only=True,
                                                      check_hash=source == VGG16_Weights.IMAGENET1K_FEATURES.url)
        except OSError as e:
            raise RuntimeError(f"backbone.pretrained: could not download {source} ({e}). Download it elsewhere "
                               "and set backbone.pretrained to the local file (or null to train from scratch)"
                               ) from None
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"backbone.pretrained: no such file {source!r}") from None


def load_vgg16_features(extractor: nn.Module, state: dict) -> None:
    """Copy VGG16's 13 convs (`features.N.weight/bias` of a torchvision vgg16 state dict) into the
    SSD extractor, whose first 13 convs are the same layers (conv1_1 .. conv5_3) in the same order."""
    indices = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"features\.(\d+)\.weight", k)))
    convs = [m for m in extractor.modules() if isinstance(m, nn.Conv2d)][:13]
    if len(indices) != 13:
        raise ValueError(f"backbone.pretrained: expected the 13 conv weights of a torchvision vgg16 state dict "
                         f"(features.N.weight), found {len(indices)}")
    for conv, i in zip(convs, indices):
        weight, bias = state[f"features.{i}.weight"], state[f"features.{i}.bias"]
        if weight.shape != conv.weight.shape:
            raise ValueError(f"backbone.pretrained: features.{i}.weight is {tuple(weight.shape)}, "
                             f"the SSD extractor expects {tuple(conv.weight.shape)}")
        with torch.no_grad():
            conv.weight.copy_(weight)
            conv.bias.copy_(bias)


def head_in_channels(ssd: SSD) -> list[int]:
    """Channels of the maps the head reads (512, 1024, 512, 256, 256, 256 for SSD300)."""
    return [conv.in_channels for conv in ssd.head.classification_head.module_list]


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


class SSDPostProcessor(nn.Module):
    """SSD outputs -> per-image detections, with PostProcessor's call and output.

    forward(outputs, orig_target_sizes [B, 2] as (w, h)) -> list of {"labels" (0..num_classes-1, or COCO
    category ids with remap_mscoco_category), "boxes" xyxy in original-image pixels, "scores"}: torchvision's
    SSD.postprocess_detections (softmax; per class: score > score_thresh, top topk_candidates; NMS per
    class at nms_thresh; the best detections_per_img).

    Deploy mode (export): the same detections as fixed-size tensors labels [B, D], boxes [B, D, 4],
    scores [B, D] (D = detections_per_img), best first; where an image has fewer than D detections
    the remaining rows have score 0 (and box 0).
    """

    def __init__(self, num_classes: int, score_thresh: float = 0.01, nms_thresh: float = 0.45,
                 detections_per_img: int = 200, topk_candidates: int = 400, remap_mscoco_category: bool = False):
        super().__init__()
        self.num_classes = num_classes
        self.remap_mscoco_category = remap_mscoco_category
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
            if self.remap_mscoco_category:
                labels = torch.tensor(COCO_LABEL_TO_CATEGORY, device=labels.device)[labels]
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
