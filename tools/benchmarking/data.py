"""Job: the training input pipeline's throughput (--data), ours against the official one's.

What one DataLoader worker does for a training batch, in one process and one thread (as a worker
runs), on the same generated JPEGs (COCO-sized: 640x480, 6 boxes each; --data-images of them):

  * ours: the loader train.py uses, rtdetr_fine.data.loaders.build_train_loader(cfg, seed) for
    configs/rtdetr_r18.yml (num_workers 0, 4 images per batch): decode, the fused strong augmentation
    (rtdetr_fine/data/fused_transforms.py), batch, random scale of the multi-scale list;
  * official: a torchvision v2 rebuild of the official RT-DETR pipeline (the ops of
    rtdetr_pytorch/configs/rtdetr/include/dataloader.yml, in that order, on a PIL image): PIL decode,
    the COCO target, RandomPhotometricDistort(p=0.5), RandomZoomOut(fill=0), RandomIoUCrop(p=0.8),
    SanitizeBoundingBoxes(min_size=1), RandomHorizontalFlip, Resize([640, 640]), ToImage, ToDtype(float32,
    scale), SanitizeBoundingBoxes(min_size=1), boxes to normalised cxcywh; batches of 4 stacked and
    resized to a random scale of the same list (the official model does that on the batch).

A timed run is one pass over the set. The two take turns in blocks (timing.time_in_blocks), so a
change in background load hits both; images/s = images / median pass time, and the speed-up is the
ratio of medians and the paired ratio (timing.paired_ratio), as for the model latencies. One more
pass of each, by hand with stage timers (StageClock: CPU time per stage), says where the time goes.
"""
import contextlib
import io
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from rtdetr_fine import cli
from rtdetr_fine.config import COCO_MULTI_SCALES, load_config
from rtdetr_fine.data.coco_ids import COCO_CATEGORY_TO_LABEL, COCO_LABEL_TO_CATEGORY
from rtdetr_fine.data.loaders import build_train_loader, set_epoch

from . import ROOT, BenchmarkError
from .report import publish, pyplot, save_figure
from .timing import latency_stats, paired_ratio, time_in_blocks

CONFIG = "configs/rtdetr_r18.yml"
BATCH_SIZE = 4          # the official per-GPU batch
IMAGE_WH = (640, 480)   # COCO's most common size
BOXES_PER_IMAGE = 6


def write_jpegs(folder, count, seed=0):
    """`count` photo-like JPEGs (a smooth random colour field with grain, quality 90, COCO-sized) and a
    COCO annotation file with BOXES_PER_IMAGE random boxes each, under COCO's category ids.
    Returns (img_folder, ann_file)."""
    width, height = IMAGE_WH
    img_folder = os.path.join(folder, "images")
    os.makedirs(img_folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for i in range(count):
        field = Image.fromarray(rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8))
        pixels = np.asarray(field.resize((width, height), Image.BICUBIC), dtype=np.float32)
        pixels = np.clip(pixels + rng.normal(0, 10, pixels.shape), 0, 255).astype(np.uint8)
        name = f"{i:06d}.jpg"
        Image.fromarray(pixels).save(os.path.join(img_folder, name), quality=90)
        images.append({"id": i + 1, "file_name": name, "width": width, "height": height})
        for _ in range(BOXES_PER_IMAGE):
            w, h = rng.uniform(8, width / 2), rng.uniform(8, height / 2)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "iscrowd": 0, "area": w * h,
                                "category_id": int(rng.choice(COCO_LABEL_TO_CATEGORY)), "bbox": [x, y, w, h]})
    ann_file = os.path.join(folder, "annotations.json")
    categories = [{"id": c, "name": str(c)} for c in COCO_LABEL_TO_CATEGORY]
    with open(ann_file, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return img_folder, ann_file


# ----------------------------------------------------------------------------- the official pipeline

class OfficialCoco(torchvision.datasets.CocoDetection):
    """The official dataset's item: PIL RGB image, target with xyxy boxes clipped to the image (boxes
    of no size dropped) and COCO's labels 0..79, as its ConvertCocoPolysToMask and remap build them;
    then `pipeline`."""

    def __init__(self, img_folder, ann_file, pipeline):
        with contextlib.redirect_stdout(io.StringIO()):              # pycocotools' progress lines
            super().__init__(img_folder, ann_file)
        self.pipeline = pipeline

    def __getitem__(self, index):
        image, anns = super().__getitem__(index)
        w, h = image.size
        boxes = torch.as_tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2].clamp_(min=0, max=w)
        boxes[:, 1::2].clamp_(min=0, max=h)
        keep = (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 2] > boxes[:, 0])
        labels = torch.tensor([COCO_CATEGORY_TO_LABEL[a["category_id"]] for a in anns], dtype=torch.int64)
        target = {"boxes": tv_tensors.BoundingBoxes(boxes[keep], format="XYXY", canvas_size=(h, w)),
                  "labels": labels[keep]}
        return self.pipeline(image, target)


def _normalised_cxcywh(image, target):
    """ConvertBox(out_fmt='cxcywh', normalize=True)."""
    boxes = v2.functional.convert_bounding_box_format(target["boxes"], new_format="CXCYWH")
    h, w = image.shape[-2:]
    return image, {**target, "boxes": boxes.as_subclass(torch.Tensor) / torch.tensor([w, h, w, h])}


def official_transforms(size=640):
    """The official train ops (rtdetr_pytorch/configs/rtdetr/include/dataloader.yml), torchvision v2 transforms."""
    return v2.Compose([
        v2.RandomPhotometricDistort(p=0.5),
        v2.RandomZoomOut(fill=0),
        v2.RandomApply([v2.RandomIoUCrop()], p=0.8),
        v2.SanitizeBoundingBoxes(min_size=1),
        v2.RandomHorizontalFlip(),
        v2.Resize([size, size]),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.SanitizeBoundingBoxes(min_size=1),
        _normalised_cxcywh,
    ])


def official_collate(batch):
    """Stack, then one random scale per batch (the official RT-DETR model's multi-scale step)."""
    images = torch.stack([image for image, _ in batch])
    size = COCO_MULTI_SCALES[int(torch.randint(len(COCO_MULTI_SCALES), (1,)))]
    return F.interpolate(images, size=[size, size]), [target for _, target in batch]


def official_loader(img_folder, ann_file):
    """The official DataLoader's work in this process (num_workers 0)."""
    dataset = OfficialCoco(img_folder, ann_file, official_transforms())
    return torch.utils.data.DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True, drop_last=True,
                                       collate_fn=official_collate)


# ----------------------------------------------------------------------------- ours

def our_loader(img_folder, ann_file):
    """build_train_loader for the R18 config on the generated set, in this process."""
    cfg = load_config(os.path.join(ROOT, CONFIG), [
        f"train_dataloader.dataset.img_folder={img_folder}", f"train_dataloader.dataset.ann_file={ann_file}",
        "train_dataloader.num_workers=0", f"train_dataloader.batch_size={BATCH_SIZE}"])
    return build_train_loader(cfg, cfg["seed"])


def one_pass(loader, epochs):
    """A function that runs the loader over the set once (a new epoch each call) and counts the images."""
    def run():
        epoch = next(epochs)
        if hasattr(loader.dataset, "set_epoch"):
            set_epoch(loader, epoch)
        return sum(len(targets) for _, targets in loader)
    return run


# ----------------------------------------------------------------------------- where the time goes

class StageClock:
    """CPU time of this process per named stage; a stage's time excludes the stages it calls."""

    def __init__(self):
        self.seconds, self._inner = {}, []

    def time(self, name, fn, *args, **kwargs):
        """fn(*args, **kwargs), timed as stage `name`."""
        self._inner.append(0.0)
        start = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            elapsed = time.process_time() - start
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed - self._inner.pop()
            if self._inner:
                self._inner[-1] += elapsed

    def wrap(self, obj, attr, name):
        """Time every call of obj.attr from now on (an instance attribute over it)."""
        fn = getattr(obj, attr)
        setattr(obj, attr, lambda *args, **kwargs: self.time(name, fn, *args, **kwargs))


OFFICIAL_STAGES = ("RandomPhotometricDistort (PIL)", "RandomZoomOut (PIL canvas)", "RandomIoUCrop (p 0.8)",
                   "SanitizeBoundingBoxes (x2)", "RandomHorizontalFlip", "Resize (PIL)", "ToImage", "ToDtype float",
                   "SanitizeBoundingBoxes (x2)", "boxes to cxcywh")


def official_stages(loader, clock):
    """Hooks on the official pipeline: PIL decode, each v2 transform."""
    dataset = loader.dataset
    clock.wrap(dataset, "_load_image", "decode (PIL)")
    dataset.pipeline.transforms = [(lambda *args, name=name, t=t: clock.time(name, t, *args))
                                   for name, t in zip(OFFICIAL_STAGES, dataset.pipeline.transforms)]


def our_stages(loader, clock):
    """Hooks on ours: decode, the fused transform's draws, photometric ops, pixels and boxes."""
    dataset = loader.dataset
    fused = dataset.transforms.strong
    clock.wrap(dataset, "load_image", "decode (PIL)")
    clock.wrap(fused, "draw", "random draws (IoU-crop trials at once)")
    clock.wrap(fused.photometric, "transform", "photometric ops (PIL, on the kept part)")
    clock.wrap(fused, "image", "crop window: pad, flip, resize once (uint8)")
    clock.wrap(fused, "boxes", "boxes (v2 box kernels)")


def stage_profile(loader, hooks, passes=1):
    """[(stage, ms per image)]: `passes` passes over the loader's dataset by hand, each item then each
    batch's collate timed (CPU time), `hooks(loader, clock)` timing the stages inside an item."""
    clock = StageClock()
    hooks(loader, clock)
    dataset, images = loader.dataset, 0
    for _ in range(passes):
        batch = []
        for index in range(len(dataset)):
            batch.append(clock.time("rest of the item (target, conversions)", dataset.__getitem__, index))
            images += 1
            if len(batch) == BATCH_SIZE:
                clock.time("batch: stack, float, multi-scale resize", loader.collate_fn, batch)
                batch = []
    return sorted(((name, 1e3 * seconds / images) for name, seconds in clock.seconds.items()), key=lambda t: -t[1])


# ----------------------------------------------------------------------------- the job

def table(report):
    """data's benchmark.md: the settings, then images/s per pipeline and ours against the official."""
    s, rows = report["settings"], report["results"]
    lines = [f"Training input pipeline, one process, {s['threads']} thread: {s['images']} generated JPEGs "
             f"({s['image_size'][0]}x{s['image_size'][1]}, {BOXES_PER_IMAGE} boxes each), "
             f"batches of {s['batch_size']}, "
             f"median of {s['runs']} passes over the set after {s['warmup']} warm-up, in blocks of {s['block']}; "
             f"load average before/after: {s['load_before']:.2f}/{s['load_after']:.2f}"
             + ("; * = too few passes without other CPU load, median over all" if any(r["contended"] for r in rows)
                else ""),
             "",
             "| pipeline | images/s | ms per image | vs official |",
             "|---|---|---|---|"]
    for r in rows:
        ratio = "x1.000" if r["name"] == "official" else f"x{r['speedup']:.2f} (paired x{r['paired_speedup']:.2f})"
        lines.append(f"| {r['name']}: {r['what']} | {r['images_per_s']:.1f}{'*' if r['contended'] else ''} "
                     f"| {1e3 / r['images_per_s']:.2f} | {ratio} |")
    for r in rows:
        total = sum(ms for _, ms in r["stages_cpu_ms"])
        lines += ["", f"Where the time goes, {r['name']}: one more pass with stage timers (CPU time of the process, "
                      f"{total:.2f} ms per image in all)", "", "| stage | ms per image | share |", "|---|---|---|"]
        lines += [f"| {stage} | {ms:.2f} | {100 * ms / total:.0f}% |" for stage, ms in r["stages_cpu_ms"]]
    return "\n".join(lines) + "\n"


def plot(report, path):
    """Two bars: images/s of the official pipeline and of ours."""
    rows = report["results"]
    fig, ax = pyplot().subplots(figsize=(4.8, 3.6))
    bars = ax.bar([r["name"] for r in rows], [r["images_per_s"] for r in rows], color=["0.6", "tab:blue"])
    for bar, r in zip(bars, rows):
        if r["name"] != "official":
            ax.annotate(f"x{r['speedup']:.2f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("images/s, one thread")
    ax.set_title("training input pipeline (one DataLoader worker)", fontsize=9)
    save_figure(fig, path)


def run(args, log):
    """Generate the JPEGs, time both loaders in turns, write benchmark.{json,md,png}; returns the report."""
    if args.data_images < BATCH_SIZE:
        raise BenchmarkError(f"--data-images must be at least one batch ({BATCH_SIZE}), got {args.data_images}")
    cli.check_output_dir(args.out_dir, "--out-dir")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                       # a DataLoader worker's share
    try:
        img_folder, ann_file = write_jpegs(os.path.join(args.out_dir, "data_jpegs"), args.data_images)
        loaders = [("official", "torchvision v2 on PIL, as the official configs list", official_loader,
                    official_stages),
                   ("ours", "build_train_loader", our_loader, our_stages)]
        epochs = iter(range(10 ** 9))
        passes = [one_pass(build(img_folder, ann_file), epochs) for _, _, build, _ in loaders]
        load_before = os.getloadavg()[0]
        log(f"timing {args.runs} passes over {args.data_images} images per pipeline in blocks of {args.block}")
        start = time.perf_counter()
        timed = time_in_blocks(passes, args.runs, args.warmup, args.block)
        log(f"timed in {time.perf_counter() - start:.0f} s; one more pass each with stage timers")
        stages = [stage_profile(build(img_folder, ann_file), hooks) for _, _, build, hooks in loaders]
    finally:
        torch.set_num_threads(threads)
    images = args.data_images // BATCH_SIZE * BATCH_SIZE           # drop_last
    official_stats = latency_stats(timed[0])
    results = []
    for (name, what, _, _), samples, profile in zip(loaders, timed, stages):
        stats = latency_stats(samples)
        paired = paired_ratio(timed[0], samples)
        results.append({"name": name, "what": what, "images_per_s": images / (stats["median_ms"] / 1e3),
                        "pass_ms": stats["median_ms"], "contended": stats["contended"],
                        "speedup": official_stats["median_ms"] / stats["median_ms"],
                        "paired_speedup": 1 / paired if paired else None, "stages_cpu_ms": profile})
    settings = {"images": args.data_images, "image_size": list(IMAGE_WH), "batch_size": BATCH_SIZE, "threads": 1,
                "runs": args.runs, "warmup": args.warmup, "block": args.block, "config": CONFIG,
                "load_before": load_before, "load_after": os.getloadavg()[0]}
    return publish({"settings": settings, "results": results}, args.out_dir, log, plot, table)
