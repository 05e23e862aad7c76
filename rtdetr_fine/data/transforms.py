"""RT-DETR train / val pipelines on torchvision.transforms.v2.

Input: (PIL RGB image, target) from CocoDetection. Output: image float32 [3, H, W] in
[0, 1], target {"boxes": float32 [N, 4] cxcywh normalised by (W, H), "labels": int64 [N],
"image_id": int64 [], "orig_size": int64 [2] (w, h), "size": int64 [2] (W, H)}.
"""
import torch
from torchvision import tv_tensors
from torchvision.ops import box_convert
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ..config import image_hw


def _per_box_entries(sample):
    """labels_getter for SanitizeBoundingBoxes: every per-box tensor of the target."""
    target = sample[1]
    return tuple(target[k] for k in ("labels", "area", "iscrowd") if k in target)


def _sanitize():
    return v2.SanitizeBoundingBoxes(min_size=1, labels_getter=_per_box_entries)


def _find_boxes(sample):
    """The BoundingBoxes inside a (nested tuple / list / dict) sample, or None."""
    if isinstance(sample, tv_tensors.BoundingBoxes):
        return sample
    items = sample.values() if isinstance(sample, dict) else sample if isinstance(sample, (tuple, list)) else ()
    for item in items:
        found = _find_boxes(item)
        if found is not None:
            return found
    return None


class RandomIoUCropNonEmpty(v2.RandomIoUCrop):
    """torchvision's RandomIoUCrop, skipped for samples without boxes.

    With no boxes no crop can qualify, so torchvision's sampler only ever ends on its
    "leave as is" option; returning the sample unchanged is the same result, without
    the rejection loop (and without relying on how it treats empty box tensors).
    """

    def forward(self, *inputs):
        sample = inputs if len(inputs) > 1 else inputs[0]
        boxes = _find_boxes(sample)
        if boxes is not None and boxes.numel() == 0:
            return sample
        return super().forward(*inputs)


def to_model_target(image, target):
    """Final step: image tensor [3, H, W]; boxes -> plain cxcywh normalised to [0, 1]."""
    xyxy = F.convert_bounding_box_format(target["boxes"], new_format=tv_tensors.BoundingBoxFormat.XYXY)
    return image, model_target(xyxy.as_subclass(torch.Tensor), target["labels"], target, image.shape[-2:])


def model_target(xyxy, labels, target, size):
    """The model's target for plain xyxy pixel boxes [N, 4] on an image of `size` (h, w): boxes as
    cxcywh normalised to [0, 1], labels [N], image_id and orig_size from `target`, size (w, h)."""
    h, w = size
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    xyxy = torch.minimum(xyxy.float().clamp(min=0), scale)           # guard float round-off
    return {
        "boxes": box_convert(xyxy, "xyxy", "cxcywh") / scale,        # [N, 4]
        "labels": labels,
        "image_id": target["image_id"],
        "orig_size": target["orig_size"],
        "size": torch.tensor([w, h], dtype=torch.int64),
    }


def build_train_transforms(size=640, strong_aug=True):
    """RT-DETR training pipeline. `size`: int or (h, w).

    strong_aug=False drops RandomPhotometricDistort, RandomZoomOut and RandomIoUCrop,
    as the official recipe does from its stop_epoch on.
    """
    strong = [
        v2.RandomPhotometricDistort(p=0.5),
        v2.RandomZoomOut(fill=0),
        v2.RandomApply([RandomIoUCropNonEmpty()], p=0.8),
        _sanitize(),
    ] if strong_aug else []
    return v2.Compose(strong + [
        v2.RandomHorizontalFlip(),
        v2.Resize(image_hw(size)),
        _sanitize(),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        to_model_target,
    ])


def build_val_image_transform(size=640):
    """The image half of the evaluation pipeline: PIL RGB -> float32 [3, H, W] in [0, 1] at `size`
    (int or (h, w)). predict.py applies it alone, so its inputs match eval's exactly."""
    return v2.Compose([
        v2.Resize(image_hw(size)),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
    ])


def build_val_transforms(size=640):
    """Evaluation pipeline: resize to `size` (int or (h, w)), float image, normalised cxcywh."""
    return v2.Compose([build_val_image_transform(size), to_model_target])


class StopEpochTransforms:
    """Strong-augmentation training pipeline until `stop_epoch`, the plain one from then on.

    strong: the strong pipeline (default: build_train_transforms(size); the loaders pass the fused
    form of it, fused_transforms.FusedTrainTransform). Call set_epoch(epoch) before iterating each
    epoch (DataLoader workers get a copy of the dataset when they start, so use non-persistent
    workers or num_workers=0).
    """

    def __init__(self, size=640, stop_epoch=None, strong=None):
        self.stop_epoch = stop_epoch
        self.epoch = 0
        self.strong = strong or build_train_transforms(size, strong_aug=True)
        self.plain = build_train_transforms(size, strong_aug=False)

    def set_epoch(self, epoch):
        self.epoch = epoch

    @property
    def strong_aug(self):
        return self.stop_epoch is None or self.epoch < self.stop_epoch

    def __call__(self, image, target):
        return (self.strong if self.strong_aug else self.plain)(image, target)

    def __repr__(self):
        return f"{type(self).__name__}(stop_epoch={self.stop_epoch}, epoch={self.epoch}, strong={self.strong})"
