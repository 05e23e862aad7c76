"""Detect objects in images, folders and videos; draw the detections and write them in the COCO results format.

    python predict.py -c configs/demo/rtdetr_r18_fine_shapes.yml -r output/demo_shapes/best.pth data/demo_shapes/val
    python predict.py -c configs/rtdetr_r18_fine.yml -r best.pth street.mp4 photo.jpg -o out --score-threshold 0.4
    python predict.py -c configs/rtdetr_r18_fine.yml --onnx model.onnx photos/     # a file from export_onnx.py

Writes into -o DIR (default output/predict):
  <name>.<ext>, <name>.mp4   each input image / video with its detections (score >= --score-threshold)
                             drawn: box, class name, score
  detections.json            the same detections in the COCO results format:
                             [{"image_id", "category_id", "bbox": [x, y, w, h] in pixels, "score"}, ...]
  images.json                {"images": [{"id", "file_name", "width", "height"(, "frame")}], "categories",
                             "annotations": []}: what the image ids stand for, so that
                             COCO("images.json").loadRes("detections.json") loads them
Image ids count from 1 over the inputs in order; every video frame is an image ("frame": index from 0).

Images are read as eval.py reads them (RGB, EXIF orientation applied), resized to the config's
val_dataloader.image_size (the ONNX file's input size with --onnx) and scaled to [0, 1]; boxes are
mapped back to the original pixels. Category ids and names: the class set the checkpoint records
(train.py writes it), else the config's annotation file's categories, else COCO's. With --onnx the
weights are the ONNX file's; -r then only supplies the class set.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor

import rtdetr_fine
from rtdetr_fine.checkpoint import load_weights
from rtdetr_fine.classes import apply_class_set, inference_class_set
from rtdetr_fine.config import ConfigError
from rtdetr_fine.data import build_val_image_transform
from rtdetr_fine.data.image_io import load_rgb_image
from rtdetr_fine.evaluation import to_coco_results

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
# box colours by label (matplotlib's tab10), so one class keeps its colour across images
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]


class PredictError(Exception):
    """A user-facing failure (missing input, unreadable file, ...): printed without a traceback."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders of images, video files")
    p.add_argument("-c", "--config", required=True, help="YAML config the model was trained with")
    p.add_argument("-r", "--resume", metavar="CKPT", help="checkpoint (EMA weights first); with --onnx: class set only")
    p.add_argument("--onnx", metavar="MODEL", help="run this export_onnx.py file with onnxruntime instead")
    p.add_argument("-o", "--output-dir", default="output/predict", help="where to write (default output/predict)")
    p.add_argument("--score-threshold", type=float, default=0.5, help="draw and keep detections at or above this")
    p.add_argument("-u", "--update", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    return p.parse_args(argv)


# ---------------------------------------------------------------- inputs

def collect_inputs(paths):
    """INPUT arguments -> [(kind 'image' | 'video', path)]; folders give their images and videos, sorted."""
    found = []
    for path in paths:
        if os.path.isdir(path):
            entries = sorted(os.path.join(path, name) for name in os.listdir(path))
            media = [(kind_of(p), p) for p in entries if os.path.isfile(p) and kind_of(p)]
            if not media:
                raise PredictError(f"no images or videos in folder {path} (extensions: "
                                   f"{' '.join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)})")
            found += media
        elif os.path.isfile(path):
            if not kind_of(path):
                raise PredictError(f"{path}: not an image or video file name (extensions: "
                                   f"{' '.join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)})")
            found.append((kind_of(path), path))
        else:
            raise PredictError(f"input not found: {path}")
    return found


def kind_of(path):
    ext = os.path.splitext(path)[1].lower()
    return "image" if ext in IMAGE_EXTENSIONS else "video" if ext in VIDEO_EXTENSIONS else None


def output_name(path, kind, taken):
    """A file name in the output folder for input `path` that no earlier input took."""
    stem, ext = os.path.splitext(os.path.basename(path))
    ext = ext.lower() if kind == "image" else ".mp4"
    name, n = stem + ext, 1
    while name in taken:
        n += 1
        name = f"{stem}_{n}{ext}"
    taken.add(name)
    return name


# ---------------------------------------------------------------- class set and detectors

def resolve_device(arg):
    if arg == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if arg.startswith("cuda") and not torch.cuda.is_available():
        raise PredictError(f"--device {arg}: CUDA is not available on this machine")
    return torch.device(arg)


def val_size(cfg):
    size = cfg["val_dataloader"]["image_size"]
    return (size, size) if isinstance(size, int) else tuple(size)


def build_torch_detector(cfg, checkpoint, device):
    """The trained model as a detector: (images [B, 3, H, W] in [0, 1], sizes [B, 2] (w, h) int64) ->
    (labels [B, K], boxes [B, K, 4] xyxy pixels, scores [B, K]) as numpy, the export's deploy interface.

    The one place predict.py builds the model (a model-variant flag would go here).
    """
    model = rtdetr_fine.build_model(cfg)
    try:
        which = load_weights(model, checkpoint, prefer_ema=True, log=lambda *a: None)
    except (ValueError, FileNotFoundError) as e:
        raise PredictError(f"cannot use checkpoint {checkpoint} with this config: {e}") from None
    model.to(device).eval()
    postprocessor = rtdetr_fine.build_postprocessor(cfg).deploy()   # contiguous labels; mapped by the class set

    @torch.no_grad()
    def detect(images, sizes):
        labels, boxes, scores = postprocessor(model(images.to(device)), sizes.to(device))
        return labels.cpu().numpy(), boxes.float().cpu().numpy(), scores.float().cpu().numpy()

    return detect, f"{which} weights of {checkpoint}", val_size(cfg)


def build_onnx_detector(path, device, fallback_size):
    """An export_onnx.py file run by onnxruntime, as a detector with build_torch_detector's interface.

    Inputs `images` float32 [N, 3, H, W], `orig_target_sizes` int64 [N, 2] (w, h); outputs labels,
    boxes, scores. H x W is the file's (fixed at export) when it says so, else `fallback_size`.
    """
    import onnxruntime as ort
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(path, options, providers=providers)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types; re-raised naming the file
        raise PredictError(f"cannot load ONNX model {path}: {e}") from None
    inputs = {i.name: i.shape for i in session.get_inputs()}
    if set(inputs) != {"images", "orig_target_sizes"}:
        raise PredictError(f"{path}: inputs {sorted(inputs)}; expected export_onnx.py's 'images' and "
                           "'orig_target_sizes'")
    batch, _, height, width = inputs["images"]
    if isinstance(batch, int) and batch != 1:
        raise PredictError(f"{path} was exported for batches of {batch}; predict.py feeds one image at a time: "
                           "export with --batch-size 1 (the default) or --dynamic")
    size = (height, width) if isinstance(height, int) and isinstance(width, int) else fallback_size

    def detect(images, sizes):
        return session.run(["labels", "boxes", "scores"], {"images": images.numpy(),
                                                          "orig_target_sizes": sizes.numpy()})

    return detect, f"onnxruntime {path} ({providers[0]})", size


# ---------------------------------------------------------------- one image

def detect_image(detect, transform, image, image_id, classes, threshold):
    """COCO results of one PIL RGB image at or above `threshold` (labels without a category dropped)."""
    width, height = image.size
    labels, boxes, scores = detect(transform(image)[None], torch.tensor([[width, height]], dtype=torch.int64))
    result = {"labels": torch.as_tensor(np.asarray(labels[0])), "boxes": torch.as_tensor(np.asarray(boxes[0])),
              "scores": torch.as_tensor(np.asarray(scores[0]))}
    return [d for d in to_coco_results(image_id, result, classes.label2category) if d["score"] >= threshold]


def draw_detections(image, detections, classes):
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


def label_font(height, width):
    """(TrueType file, size) scaled to the image: matplotlib's DejaVu Sans, else PIL's default font."""
    try:
        from matplotlib import font_manager
        return font_manager.findfont("DejaVu Sans", fallback_to_default=True), max(10, round(min(height, width) / 40))
    except Exception:  # noqa: BLE001 - any font trouble: fall back to PIL's built-in font
        return None, None


# ---------------------------------------------------------------- whole inputs

def predict_image(path, out_path, image_id, detect, transform, classes, threshold):
    try:
        image, _ = load_rgb_image(path)
    except (OSError, ValueError) as e:
        raise PredictError(str(e)) from None
    detections = detect_image(detect, transform, image, image_id, classes, threshold)
    drawn = draw_detections(pil_to_tensor(image), detections, classes)
    quality = {"quality": 95} if out_path.lower().endswith((".jpg", ".jpeg")) else {}
    Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(out_path, **quality)
    info = {"id": image_id, "file_name": os.path.basename(path), "width": image.size[0], "height": image.size[1]}
    return detections, [info]


def predict_video(path, out_path, first_id, detect, transform, classes, threshold, bar):
    """Every frame of the first video stream, drawn into an H.264 mp4 at the same frame rate."""
    import av
    detections, images = [], []
    try:
        with av.open(path) as source, av.open(out_path, "w") as sink:
            if not source.streams.video:
                raise PredictError(f"{path}: no video stream")
            stream = source.streams.video[0]
            encoder = None
            for index, frame in enumerate(source.decode(stream)):
                image = frame.to_image()                                           # PIL RGB
                image_id = first_id + index
                found = detect_image(detect, transform, image, image_id, classes, threshold)
                drawn = draw_detections(pil_to_tensor(image), found, classes)
                if encoder is None:
                    encoder = sink.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4",
                                              rate=stream.average_rate or 25)
                    encoder.width, encoder.height = even(image.size[0]), even(image.size[1])
                    encoder.pix_fmt = "yuv420p"
                picture = drawn[:, :encoder.height, :encoder.width].permute(1, 2, 0).contiguous().numpy()
                for packet in encoder.encode(av.VideoFrame.from_image(Image.fromarray(picture))):
                    sink.mux(packet)
                detections += found
                images.append({"id": image_id, "file_name": os.path.basename(path), "frame": index,
                               "width": image.size[0], "height": image.size[1]})
                bar.update(1)
            if encoder is None:
                raise PredictError(f"{path}: no video frames")
            for packet in encoder.encode():
                sink.mux(packet)
    except av.FFmpegError as e:
        raise PredictError(f"cannot read video {path}: {e}") from None
    return detections, images


def even(n):
    """yuv420p needs even frame sizes: an odd last row / column is left out of the written video."""
    return n - n % 2


def video_frames(path):
    """Frame count the container states (0 when unknown)."""
    import av
    try:
        with av.open(path) as source:
            return max(source.streams.video[0].frames, 0) if source.streams.video else 0
    except av.FFmpegError as e:
        raise PredictError(f"cannot read video {path}: {e}") from None


def run(args, log=print):
    """The CLI's work; returns (detections, images). Raises PredictError for user errors."""
    from tqdm import tqdm
    if not 0.0 <= args.score_threshold <= 1.0:
        raise PredictError(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    for flag, path in (("-r", args.resume), ("--onnx", args.onnx)):
        if path and not os.path.isfile(path):
            raise PredictError(f"{flag} file not found: {path}")
    if not args.resume and not args.onnx:
        raise PredictError("give the weights: -r CKPT (PyTorch) or --onnx MODEL.onnx")
    inputs = collect_inputs(args.inputs)
    try:
        cfg = rtdetr_fine.load_config(args.config, args.update)
    except ConfigError as e:
        raise PredictError(f"config error: {e}") from None
    cfg["backbone"]["pretrained"] = None               # every weight comes from the checkpoint
    try:
        classes, source = inference_class_set(cfg, args.resume)
    except (ValueError, FileNotFoundError) as e:    # CocoFormatError is a ValueError
        raise PredictError(str(e)) from None
    apply_class_set(cfg, classes)
    device = resolve_device(args.device)
    if args.onnx:
        detect, weights, size = build_onnx_detector(args.onnx, device, val_size(cfg))
    else:
        detect, weights, size = build_torch_detector(cfg, args.resume, device)
    log(f"weights: {weights}; input {size[0]}x{size[1]}; {device}")
    log(f"{classes.describe()} (from {source})")

    os.makedirs(args.output_dir, exist_ok=True)
    transform = build_val_image_transform(size)
    frames = sum(video_frames(p) for kind, p in inputs if kind == "video")
    taken, detections, images = set(), [], []
    with tqdm(total=sum(kind == "image" for kind, _ in inputs) + frames, unit="img", dynamic_ncols=True) as bar:
        for kind, path in inputs:
            out_path = os.path.join(args.output_dir, output_name(path, kind, taken))
            if kind == "image":
                found, infos = predict_image(path, out_path, len(images) + 1, detect, transform, classes,
                                             args.score_threshold)
                bar.update(1)
            else:
                found, infos = predict_video(path, out_path, len(images) + 1, detect, transform, classes,
                                             args.score_threshold, bar)
            detections += found
            images += infos
    write_json(os.path.join(args.output_dir, "detections.json"), detections)
    write_json(os.path.join(args.output_dir, "images.json"),
               {"images": images, "annotations": [], "categories": classes.coco_categories()})
    log(f"{len(detections)} detections (score >= {args.score_threshold}) in {len(images)} images -> "
        f"{args.output_dir} (drawn inputs, detections.json, images.json)")
    return detections, images


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)


def main(argv=None):
    args = parse_args(argv)
    try:
        run(args)
    except PredictError as e:
        print(f"predict.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
