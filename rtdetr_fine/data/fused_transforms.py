"""RT-DETR's strong training augmentation in one geometric step: the sequential pipeline's random
draws and outputs, without its zoom-out canvas.

The sequential pipeline (transforms.build_train_transforms: the official recipe's torchvision v2
ops on a PIL image) runs RandomPhotometricDistort, RandomZoomOut (a canvas up to 4x the image's
sides), RandomIoUCrop (p 0.8) on that canvas, SanitizeBoundingBoxes, RandomHorizontalFlip, Resize,
SanitizeBoundingBoxes and a float conversion. Its time goes to RandomIoUCrop's rejection loop (up to
40 trials of small tensor ops per sampled threshold), to the photometric ops on pixels the crop then
drops, and to PIL padding, cropping and resizing a canvas that is mostly zeros.
FusedTrainTransform takes the same v2 transform objects and:

  1. draws every random parameter first, from torch's global generator and in the sequential order,
     with the transforms' own make_params; RandomIoUCrop's trials are evaluated at once
     (sample_iou_crop), consuming the same numbers as its loop;
  2. computes the crop window in zoom-out canvas coordinates and the part of the image it keeps;
  3. runs the photometric ops (torchvision's PIL kernels, as the sequential pipeline does) on that
     part only: they act per pixel, except adjust_contrast, which blends with the mean of the whole
     image, so contrast and the ops before it run on the whole image (photometric_split);
  4. pads only that part to the window (mirrored into place when flipping) and resizes the window
     once, as a uint8 tensor with torchvision's resize (antialiased bilinear, as PIL's);
  5. moves the boxes with torchvision's box kernels (pad, crop, sanitize, flip, resize, sanitize).

The image stays uint8 [3, H, W]; the collate converts the whole batch to float (collate.to_float).
Against the sequential pipeline for the same draws the boxes are equal (float32 round-off) and the
image is equal up to the resize's rounding, torch's uint8 kernel against PIL's: at most 1 level of 255
(tests/data/test_fused_transforms.py). Where the time goes: docs/training.md, "The input pipeline".
"""
import numpy as np
import PIL.Image
import torch
from torchvision import tv_tensors
from torchvision.ops import box_iou
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from .transforms import build_train_transforms, model_target

XYXY = tv_tensors.BoundingBoxFormat.XYXY


def sample_iou_crop(crop: v2.RandomIoUCrop, boxes: torch.Tensor, canvas_size) -> dict:
    """v2.RandomIoUCrop.make_params for xyxy `boxes` [N, 4] (float32, N >= 1) on a canvas (h, w), with
    all trials of a sampled IoU threshold evaluated at once.

    torch's global generator is consumed exactly as the loop consumes it (one randint per threshold;
    per trial two numbers, and two more when the trial's aspect ratio passes), so every draw after
    it matches the sequential pipeline's too. The arithmetic is the loop's, in the same dtypes
    (float32 sizes and positions, truncated to int; float64 aspect ratios; float32 IoU).
    Returns {} (leave the sample as it is) or dict(top, left, height, width, is_within_crop_area).
    """
    height, width = canvas_size
    cx = 0.5 * (boxes[:, 0] + boxes[:, 2])                                   # [N]
    cy = 0.5 * (boxes[:, 1] + boxes[:, 3])
    while True:
        min_iou = crop.options[int(torch.randint(low=0, high=len(crop.options), size=(1,)))]
        if min_iou >= 1.0:                                                    # the "leave as is" option
            return {}
        state = torch.get_rng_state()
        pairs = torch.rand(4 * crop.trials).view(-1, 2)                      # [2T, 2]: enough for T trials
        # pair k as a trial's size draw; pair k + 1 as the position draw of the crop sized by pair k
        scale = crop.min_scale + (crop.max_scale - crop.min_scale) * pairs
        new_w, new_h = (width * scale[:, 0]).long(), (height * scale[:, 1]).long()     # [2T]
        aspect = new_w.double() / new_h.double()
        aspect_ok = (crop.min_aspect_ratio <= aspect) & (aspect <= crop.max_aspect_ratio)
        new_w, new_h = new_w[:-1], new_h[:-1]                                # [2T - 1]
        left = ((width - new_w) * pairs[1:, 0]).long()
        top = ((height - new_h) * pairs[1:, 1]).long()
        right, bottom = left + new_w, top + new_h
        within = ((left[:, None] < cx) & (cx < right[:, None])
                  & (top[:, None] < cy) & (cy < bottom[:, None]))            # [2T - 1, N]
        ious = box_iou(boxes, torch.stack([left, top, right, bottom], 1).to(boxes.dtype)).t()
        best = ious.masked_fill(~within, float("-inf")).amax(1)             # [2T - 1]
        accept = (new_w > 0) & (new_h > 0) & within.any(1) & ~(best < min_iou)

        k, found = 0, None                                                   # replay the loop's trials
        aspect_ok, accept = aspect_ok.tolist(), accept.tolist()
        for _ in range(crop.trials):
            if not aspect_ok[k]:
                k += 1
                continue
            k += 2
            if accept[k - 2]:
                found = k - 2
                break
        torch.set_rng_state(state)
        torch.rand(2 * k)                                                    # what the loop drew
        if found is not None:
            return dict(top=int(top[found]), left=int(left[found]), height=int(new_h[found]),
                        width=int(new_w[found]), is_within_crop_area=within[found])


def photometric_split(params: dict):
    """RandomPhotometricDistort's params -> (params of the ops to run on the whole image, params of
    the per-pixel ops that may run on the kept part only, channel permutation or None).

    The ops run in v2's order: brightness, contrast (before), saturation, hue, contrast (after),
    channel permutation. adjust_contrast blends with the mean grey level of the whole image, so it
    and every op before it need the whole image; the others act on each pixel alone. The channel
    permutation commutes with padding and resizing, so it is left for the uint8 tensor.
    """
    none = {key: None for key in ("brightness_factor", "contrast_factor", "saturation_factor", "hue_factor")}
    none.update(contrast_before=params["contrast_before"], channel_permutation=None)
    if params["contrast_factor"] is None:
        whole, part = none, params
    elif params["contrast_before"]:
        whole = {**none, "brightness_factor": params["brightness_factor"],
                 "contrast_factor": params["contrast_factor"]}
        part = {**none, "saturation_factor": params["saturation_factor"], "hue_factor": params["hue_factor"]}
    else:
        whole, part = params, none
    return {**whole, "channel_permutation": None}, {**part, "channel_permutation": None}, \
        params["channel_permutation"]


def kept_part(window, padding, image_size, flip):
    """Where the crop window (top, left, height, width; zoom-out canvas coordinates) meets the image,
    which sits at (padding[1], padding[0]) on the canvas: (the image's box (x0, y0, x1, y1) inside the
    window, the (y, x) where that box lands in the window, mirrored when flipping), or (None, None)."""
    top, left, height, width = window
    pad_left, pad_top = padding[:2]
    image_w, image_h = image_size
    x0, y0 = max(left - pad_left, 0), max(top - pad_top, 0)
    x1, y1 = min(left + width - pad_left, image_w), min(top + height - pad_top, image_h)
    if x1 <= x0 or y1 <= y0:
        return None, None
    at_x = x0 + pad_left - left
    if flip:
        at_x = width - at_x - (x1 - x0)
    return (x0, y0, x1, y1), (y0 + pad_top - top, at_x)


def _stage(compose: v2.Compose, kind):
    """The first transform of type `kind` in the sequential pipeline."""
    return next(t for t in compose.transforms if isinstance(t, kind))


class FusedTrainTransform:
    """build_train_transforms(size, strong_aug=True) in one geometric step (module docstring).

    (PIL RGB image, target as CocoDetection gives it: boxes BoundingBoxes xyxy, labels, image_id,
    orig_size) -> (image uint8 [3, H, W], target: boxes cxcywh normalised [N, 4], labels [N],
    image_id, orig_size, size). Randomness: torch's global generator, as the sequential pipeline's.
    """

    def __init__(self, size=640):
        self.sequential = build_train_transforms(size, strong_aug=True)   # its stages, their parameters
        self.photometric = _stage(self.sequential, v2.RandomPhotometricDistort)
        self.zoom_out = _stage(self.sequential, v2.RandomZoomOut)
        if self.zoom_out.fill != 0:
            raise ValueError("FusedTrainTransform pads with zeros: RandomZoomOut must have fill=0")
        apply_crop = _stage(self.sequential, v2.RandomApply)
        self.crop_p, self.iou_crop = apply_crop.p, apply_crop.transforms[0]
        self.flip_p = _stage(self.sequential, v2.RandomHorizontalFlip).p
        self.size = list(_stage(self.sequential, v2.Resize).size)          # [h, w]
        self.sanitize = _stage(self.sequential, v2.SanitizeBoundingBoxes)

    def draw(self, image, boxes: torch.Tensor) -> dict:
        """Every random parameter of the pipeline, drawn as the sequential pipeline draws them.

        image: PIL; boxes: plain xyxy [N, 4] on it. Returns photometric (v2 params), padding
        [left, top, right, bottom], canvas_boxes [N, 4], crop ({} or RandomIoUCrop's params), flip.
        """
        width, height = image.size
        photometric = self.photometric.make_params([image])
        padding = [0, 0, 0, 0]
        if torch.rand(1) < self.zoom_out.p:                                # _RandomApplyTransform's draw
            padding = self.zoom_out.make_params([image])["padding"]
        canvas_boxes, canvas = F.pad_bounding_boxes(boxes, XYXY, (height, width), padding)
        crop = {}
        if torch.rand(1) < self.crop_p and len(boxes):                     # RandomApply's draw, then
            crop = sample_iou_crop(self.iou_crop, canvas_boxes, canvas)    # no crop without boxes
        flip = bool(torch.rand(1) < self.flip_p)
        return dict(photometric=photometric, padding=padding, canvas_boxes=canvas_boxes, canvas=canvas,
                    crop=crop, flip=flip)

    def __call__(self, image, target):
        if not isinstance(image, PIL.Image.Image) or image.mode != "RGB":
            raise TypeError(f"{type(self).__name__} takes a PIL RGB image (as CocoDetection loads it), got "
                            + (f"mode {image.mode}" if isinstance(image, PIL.Image.Image) else type(image).__name__))
        boxes = F.convert_bounding_box_format(target["boxes"], new_format=XYXY).as_subclass(torch.Tensor)
        params = self.draw(image, boxes)
        window = self.window(params)
        pixels = self.image(image, params, window)
        boxes, labels = self.boxes(params, target["labels"], window)
        return pixels, model_target(boxes, labels, target, pixels.shape[-2:])

    @staticmethod
    def window(params):
        """The crop window (top, left, height, width) in zoom-out canvas coordinates."""
        crop, (canvas_h, canvas_w) = params["crop"], params["canvas"]
        if not crop:
            return 0, 0, canvas_h, canvas_w
        return crop["top"], crop["left"], crop["height"], crop["width"]

    def image(self, image, params, window) -> torch.Tensor:
        """The output image: photometric ops, then the kept part flipped, padded to the window and
        resized once. -> uint8 [3, H, W], contiguous."""
        height, width = window[2:]
        kept, at = kept_part(window, params["padding"], image.size, params["flip"])
        whole, part, permutation = photometric_split(params["photometric"])
        covered = kept is not None and at == (0, 0) and (kept[3] - kept[1], kept[2] - kept[0]) == (height, width)
        pixels = (np.empty if covered else np.zeros)((height, width, 3), dtype=np.uint8)   # the window [h, w, 3]
        if kept is not None:
            image = self.photometric.transform(image, whole)
            if kept != (0, 0, *image.size):
                image = image.crop(kept)
            image = self.photometric.transform(image, part)
            if params["flip"]:
                image = F.horizontal_flip(image)
            (y, x), (w, h) = at, image.size
            pixels[y:y + h, x:x + w] = np.asarray(image)
        # a [3, h, w] view of [h, w, 3] memory: torchvision's uint8 resize runs its fast kernel on channels-last
        out = F.resize(torch.from_numpy(pixels).permute(2, 0, 1), self.size, antialias=True).numpy()
        # to contiguous [3, H, W], the channel permutation taken in the same copy
        return torch.from_numpy(out[permutation.tolist()] if permutation is not None else np.ascontiguousarray(out))

    def boxes(self, params, labels, window):
        """The boxes through the sequential pipeline's box ops: (xyxy [M, 4] in output pixels, labels [M])."""
        boxes, canvas = params["canvas_boxes"], params["canvas"]
        crop = params["crop"]
        if crop:
            top, left, height, width = window
            boxes, canvas = F.crop_bounding_boxes(boxes, XYXY, top, left, height, width)
            boxes[~crop["is_within_crop_area"]] = 0                        # as RandomIoUCrop marks them
        boxes, labels = self._sanitized(boxes, labels, canvas)
        if params["flip"]:
            boxes = F.horizontal_flip_bounding_boxes(boxes, XYXY, canvas)
        boxes, canvas = F.resize_bounding_boxes(boxes, canvas, self.size, format=XYXY)
        return self._sanitized(boxes, labels, canvas)

    def _sanitized(self, boxes, labels, canvas):
        """SanitizeBoundingBoxes with the pipeline's min_size / min_area: (boxes, labels) kept."""
        boxes, valid = F.sanitize_bounding_boxes(boxes, XYXY, canvas, min_size=self.sanitize.min_size,
                                                 min_area=self.sanitize.min_area)
        return boxes, labels[valid]

    def __repr__(self):
        return f"{type(self).__name__}(size={self.size}, sequential={self.sequential})"
