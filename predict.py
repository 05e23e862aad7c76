"""Detect objects in images, folders and videos; draw the detections and write them in the COCO results format.

    python predict.py -r output/demo_shapes/best.pth data/demo_shapes/val     # the config the checkpoint records
    python predict.py -c configs/demo/rtdetr_r18_fine_shapes.yml -r output/demo_shapes/best.pth data/demo_shapes/val
    python predict.py -c configs/rtdetr_r18_fine.yml -r best.pth street.mp4 photo.jpg -o out --score-threshold 0.4
    python predict.py -c configs/rtdetr_r18_fine.yml --onnx model.onnx photos/     # a file from export_onnx.py
    python predict.py -r best.pth --onnx model.onnx photos/     # the class set (and config) from the checkpoint

Writes into -o DIR (default output/predict):
  <name>.<ext>, <name>.mp4   each input image / video with its detections (score >= --score-threshold)
                             drawn: box, class name, score
  detections.json            the same detections in the COCO results format:
                             [{"image_id", "category_id", "bbox": [x, y, w, h] in pixels, "score"}, ...]
  images.json                {"images": [{"id", "file_name", "width", "height"(, "frame")}], "categories",
                             "annotations": []}: what the image ids stand for, so that
                             COCO("images.json").loadRes("detections.json") loads them
Image ids count from 1 over the inputs in order; every video frame is an image ("frame": index from 0).

Config: -c CONFIG, or without it the config a train.py checkpoint (-r) records; -u overrides apply on top.
A -c config that builds another model than the checkpoint records is refused, naming the keys.
Images are read as RGB with their EXIF orientation applied (as a viewer shows them), resized to the
config's val_dataloader.image_size (the ONNX file's input size with --onnx) and scaled to [0, 1], as
eval.py does (rtdetr_fine/predictor.py); boxes are
mapped back to the original pixels. Category ids and names: the class set the checkpoint records
(train.py writes it), else the config's annotation file's categories, else COCO's. With --onnx the
weights are the ONNX file's; -r then only supplies the class set.
"""
import argparse
import json
import os
import sys

from PIL import Image
from torchvision.transforms.v2.functional import pil_to_tensor

import rtdetr_fine
from rtdetr_fine import cli
from rtdetr_fine.checkpoint import config_for_checkpoint, inference_class_set
from rtdetr_fine.config import config_files
from rtdetr_fine.data.classes import apply_class_set
from rtdetr_fine.data.image_io import load_rgb_image
from rtdetr_fine.distributed import resolve_device
from rtdetr_fine.predictor import build_onnx_detector, build_torch_detector, detect_image, draw_detections, val_size

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


class PredictError(cli.UserError):
    """A user-facing failure (missing input, unreadable file, ...): printed without a traceback."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders of images, video files")
    p.add_argument("-c", "--config", help="YAML config the model was trained with; default: the config the "
                                         "checkpoint records (train.py's checkpoints do)")
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


# ---------------------------------------------------------------- whole inputs

def predict_image(path, out_path, image_id, detector, classes, threshold):
    try:
        image, _ = load_rgb_image(path)   # EXIF orientation applied: the image as a viewer shows it
    except (OSError, ValueError) as e:
        raise PredictError(str(e)) from None
    detections = detect_image(detector, image, image_id, classes, threshold)
    drawn = draw_detections(pil_to_tensor(image), detections, classes)
    quality = {"quality": 95} if out_path.lower().endswith((".jpg", ".jpeg")) else {}
    Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(out_path, **quality)
    info = {"id": image_id, "file_name": os.path.basename(path), "width": image.size[0], "height": image.size[1]}
    return detections, [info]


def predict_video(path, out_path, first_id, detector, classes, threshold, bar):
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
                found = detect_image(detector, image, image_id, classes, threshold)
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
        if path and not os.path.isfile(path) and not (flag == "-r" and os.path.isdir(path)):   # or a transformers folder
            raise PredictError(f"{flag} file not found: {path}")
    if not args.resume and not args.onnx:
        raise PredictError("give the weights: -r CKPT (PyTorch) or --onnx MODEL.onnx")
    if not args.resume and not args.config:
        raise PredictError("--onnx without -r: give the config with -c CONFIG (its class set and image size), "
                           "or -r CKPT with a train.py checkpoint, whose recorded config is then used")
    inputs = collect_inputs(args.inputs)
    if any(kind == "video" for kind, _ in inputs):   # before the config and checkpoint are read
        cli.require({"av": "av"}, "reading and writing videos")
    cli.check_output_dir(args.output_dir, "-o")        # before the model is built and run
    cli.check_outputs_apart([("-o", args.output_dir)], [*(("INPUT", p) for p in args.inputs),
                                                       *config_files(args.config), ("-r", args.resume),
                                                       ("--onnx", args.onnx)])
    taken = set()
    out_paths = [os.path.join(args.output_dir, output_name(path, kind, taken)) for kind, path in inputs]
    for path in out_paths + [os.path.join(args.output_dir, name) for name in ("detections.json", "images.json")]:
        cli.check_output_file(path, "output file")   # e.g. DIR/detections.json a folder: named before drawing
    device = resolve_device(args.device)
    cfg, config_source = config_for_checkpoint(args.config, args.resume, args.update)
    cfg["backbone"]["pretrained"] = None               # every weight comes from the checkpoint
    classes, source = inference_class_set(cfg, args.resume)
    apply_class_set(cfg, classes)
    detector = (build_onnx_detector(args.onnx, device, val_size(cfg)) if args.onnx
                else build_torch_detector(cfg, args.resume, device))
    log(f"weights: {detector.description}; input {detector.size[0]}x{detector.size[1]}; {device}")
    log(f"config: {config_source}; {classes.describe()} (from {source})")

    os.makedirs(args.output_dir, exist_ok=True)
    frames = sum(video_frames(p) for kind, p in inputs if kind == "video")
    detections, images = [], []
    with tqdm(total=sum(kind == "image" for kind, _ in inputs) + frames, unit="img", dynamic_ncols=True) as bar:
        for (kind, path), out_path in zip(inputs, out_paths):
            if kind == "image":
                found, infos = predict_image(path, out_path, len(images) + 1, detector, classes,
                                             args.score_threshold)
                bar.update(1)
            else:
                found, infos = predict_video(path, out_path, len(images) + 1, detector, classes,
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
    cli.write_text_atomic(path, json.dumps(obj))


def main(argv=None):
    run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli.run_main(main, prog="predict.py"))
