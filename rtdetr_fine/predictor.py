"""Detection on single images for predict.py and notebooks: a PyTorch or ONNX detector with one
interface, its detections in the COCO results format, and the detections drawn on the image.

    cfg = rtdetr_fine.load_config("configs/rtdetr_r18_fine.yml", ["backbone.pretrained=null"])
    classes, _ = inference_class_set(cfg, "best.pth"); apply_class_set(cfg, classes)
    detector = build_torch_detector(cfg, "best.pth", torch.device("cpu"))
    detections = detect_image(detector, image, image_id=1, classes=classes, threshold=0.5)
    drawn = draw_detections(pil_to_tensor(image), detections, classes)
"""
from typing import Callable, NamedTuple

import numpy as np
import torch

from .build import build_model, build_postprocessor
from .checkpoint import load_weights
from .config import image_hw
from .data import build_val_image_transform
from .deploy import OUTPUT_NAMES, onnxruntime_session
from .evaluation.inference import to_coco_results

# box colours by label (matplotlib's tab10), so one class keeps its colour across images
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]


class Detector(NamedTuple):
    """detect(images [B, 3, H, W] in [0, 1], sizes [B, 2] (w, h) int64) -> (labels [B, K], boxes [B, K, 4]
    xyxy pixels, scores [B, K]) as numpy: the export's deploy interface. `size` is the (H, W) it runs at."""
    detect: Callable
    size: tuple
    description: str


def val_size(cfg: dict) -> tuple:
    """(H, W) the config evaluates at: val_dataloader.image_size."""
    return image_hw(cfg["val_dataloader"]["image_size"])


def build_torch_detector(cfg: dict, checkpoint: str, device: torch.device) -> Detector:
    """The model of `cfg` with the checkpoint's weights (EMA first) and its postprocessor's deploy form
    (contiguous labels, mapped to category ids by the class set). ValueError names the checkpoint."""
    model = build_model(cfg)
    try:
        which = load_weights(model, checkpoint, prefer_ema=True, log=lambda *a: None)
    except (ValueError, FileNotFoundError) as e:
        raise ValueError(f"cannot use checkpoint {checkpoint} with this config: {e}") from None
    model.to(device).eval()
    postprocessor = build_postprocessor(cfg).deploy()

    @torch.no_grad()
    def detect(images, sizes):
        labels, boxes, scores = postprocessor(model(images.to(device)), sizes.to(device))
        return labels.cpu().numpy(), boxes.float().cpu().numpy(), scores.float().cpu().numpy()

    return Detector(detect, val_size(cfg), f"{which} weights of {checkpoint}")


def build_onnx_detector(path: str, device: torch.device, fallback_size: tuple) -> Detector:
    """An exported ONNX file run by onnxruntime (CUDA when `device` is a GPU and onnxruntime has it).

    H x W is the file's (fixed at export) when it says so, else `fallback_size`. A file without the
    deploy interface, or exported for a batch other than 1, is a ValueError naming it.
    """
    session = onnxruntime_session(path, cuda=device.type == "cuda")
    inputs = {i.name: i.shape for i in session.get_inputs()}
    if set(inputs) != {"images", "orig_target_sizes"}:
        raise ValueError(f"{path}: inputs {sorted(inputs)}; expected export_onnx.py's 'images' and "
                         "'orig_target_sizes'")
    batch, _, height, width = inputs["images"]
    if isinstance(batch, int) and batch != 1:
        raise ValueError(f"{path} was exported for batches of {batch}; images are run one at a time: "
                         "export with --batch-size 1 (the default) or --dynamic")
    size = (height, width) if isinstance(height, int) and isinstance(width, int) else fallback_size

    def detect(images, sizes):
        return session.run(OUTPUT_NAMES, {"images": images.numpy(), "orig_target_sizes": sizes.numpy()})

    return Detector(detect, size, f"onnxruntime {path} ({session.get_providers()[0]})")


def detect_image(detector: Detector, image, image_id: int, classes, threshold: float) -> list:
    """COCO results of one PIL RGB image at or above `threshold`, resized and scaled as eval.py does,
    boxes in the image's pixels (labels without a category in the class set are dropped)."""
    width, height = image.size
    transform = build_val_image_transform(detector.size)
    labels, boxes, scores = detector.detect(transform(image)[None],
                                            torch.tensor([[width, height]], dtype=torch.int64))
    result = {"labels": torch.as_tensor(np.asarray(labels[0])), "boxes": torch.as_tensor(np.asarray(boxes[0])),
              "scores": torch.as_tensor(np.asarray(scores[0]))}
    return [d for d in to_coco_results(image_id, result, classes.label2category) if d["score"] >= threshold]


def draw_detections(image: torch.Tensor, detections: list, classes) -> torch.Tensor:
    """uint8 [3, H, W] image with the detections' boxes, class names and scores drawn on (torchvision)."""
    from torchvision.utils import draw_bounding_boxes
    if not detections:
        return image
    height, width = image.shape[-2:]
    boxes = torch.tensor([d["bbox"] for d in detections], dtype=torch.float32)
    boxes[:, 2:] += boxes[:, :2]                                                   # xywh -> xyxy
    names, labels = classes.category2name, classes.category2label
    text = [f"{names[d['category_id']]} {d['score']:.2f}" for d in detections]
    colors = [PALETTE[labels[d["category_id"]] % len(PALETTE)] for d in detections]
    font, font_size = label_font(height, width)
    return draw_bounding_boxes(image, boxes, text, colors=colors, width=max(1, round(min(height, width) / 250)),
                               font=font, font_size=font_size)


def label_font(height: int, width: int):
    """(TrueType file, size) scaled to the image: matplotlib's DejaVu Sans, else PIL's default font."""
    try:
        from matplotlib import font_manager
        return font_manager.findfont("DejaVu Sans", fallback_to_default=True), max(10, round(min(height, width) / 40))
    except Exception:  # noqa: BLE001 - any font trouble: fall back to PIL's built-in font
        return None, None
