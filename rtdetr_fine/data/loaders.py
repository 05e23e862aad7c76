"""DataLoaders for train.py / eval.py from the config, and the data-path checks that run first."""
import os

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from .. import distributed as du
from ..config import ConfigError
from .coco import CocoDetection
from .collate import MultiScaleCollate, collate
from .fused_transforms import FusedTrainTransform
from .synthetic import make_shapes_dataset
from .transforms import StopEpochTransforms, build_val_transforms

COCO_HELP = """\
COCO is expected at the paths of the config keys
  train_dataloader.dataset.img_folder / ann_file   and   val_dataloader.dataset.img_folder / ann_file
with the standard layout:
  data/coco/train2017/*.jpg
  data/coco/val2017/*.jpg
  data/coco/annotations/instances_train2017.json
  data/coco/annotations/instances_val2017.json
Point them elsewhere with -u, e.g.
  -u train_dataloader.dataset.img_folder=/data/coco/train2017 \\
     train_dataloader.dataset.ann_file=/data/coco/annotations/instances_train2017.json ...
Without COCO, run the embedded CPU demo (a generated shapes set) instead:
  python train.py -c configs/demo/rtdetr_r18_fine_shapes.yml"""


def build_dataset(img_folder, ann_file, train, image_size=640, remap_mscoco_category=False,
                  num_classes=None, stop_epoch=None, classes=None, exif_transpose=False):
    """CocoDetection with the RT-DETR train (strong augs until `stop_epoch`, in their fused form:
    fused_transforms.py) or val transforms.

    image_size: int or (h, w). classes: the ClassSet to label with (e.g. the training set's);
    without it the class set comes from the file's categories under num_classes (int, checked
    against them, or "auto") and remap_mscoco_category (see rtdetr_fine/data/classes.py).
    exif_transpose: apply the EXIF orientation tag (off for COCO, whose boxes refer to the stored
    pixels, as torchvision's CocoDetection reads them).
    Call dataset.set_epoch(epoch) each epoch for the stop_epoch policy.
    """
    transforms = StopEpochTransforms(image_size, stop_epoch, strong=FusedTrainTransform(image_size)) if train \
        else build_val_transforms(image_size)
    return CocoDetection(img_folder, ann_file, transforms, remap_mscoco_category=remap_mscoco_category,
                         num_classes=num_classes, classes=classes, exif_transpose=exif_transpose)


class DataPathError(FileNotFoundError):
    pass


def prepare_demo_data(cfg):
    """For demo configs: generate (or reuse) the synthetic set on rank 0 and point the config at it."""
    demo = cfg["demo"]
    if not demo["enabled"]:
        return
    if not isinstance(cfg["num_classes"], int):
        raise ValueError(f"demo.enabled generates num_classes shape classes: set num_classes to an integer "
                         f"(1..6), not {cfg['num_classes']!r}")
    if du.is_main():
        make_shapes_dataset(demo["root"], num_train=demo["num_train"], num_val=demo["num_val"],
                            image_size=demo["image_size"], num_classes=cfg["num_classes"], seed=cfg["seed"])
    du.barrier()
    for split, key in (("train", "train_dataloader"), ("val", "val_dataloader")):
        cfg[key]["dataset"]["img_folder"], cfg[key]["dataset"]["ann_file"] = demo_paths(cfg, split)


def demo_paths(cfg, split):
    """(img_folder, ann_file) of a split of the demo set at demo.root."""
    root = cfg["demo"]["root"]
    return os.path.join(root, split), os.path.join(root, "annotations", f"instances_{split}.json")


def config_ann_file(cfg, split="val"):
    """The annotation file a config's split reads (the generated one for demo configs)."""
    return demo_paths(cfg, split)[1] if cfg["demo"]["enabled"] else cfg[f"{split}_dataloader"]["dataset"]["ann_file"]


def data_inputs(cfg, splits=("train", "val")) -> list:
    """[(config key, path)] of the image folders and annotation files the splits read (the demo set's
    for demo configs), for the output guard (cli.check_outputs_apart)."""
    found = []
    for split in splits:
        img_folder, ann_file = (demo_paths(cfg, split) if cfg["demo"]["enabled"]
                                else (cfg[f"{split}_dataloader"]["dataset"][k] for k in ("img_folder", "ann_file")))
        found += [(f"{split}_dataloader.dataset.img_folder", img_folder),
                  (f"{split}_dataloader.dataset.ann_file", ann_file)]
    return found


def check_data_paths(cfg, splits=("train", "val")):
    """Fail before building anything when a configured dataset path does not exist."""
    missing = []
    for split in splits:
        ds = cfg[f"{split}_dataloader"]["dataset"]
        for key in ("img_folder", "ann_file"):
            if not os.path.exists(ds[key]):
                missing.append(f"  {split}_dataloader.dataset.{key}: {ds[key]} (not found)")
    if missing:
        raise DataPathError("dataset not found:\n" + "\n".join(missing) + "\n\n" + COCO_HELP)


def workers(requested):
    """DataLoader workers: the config's number, at most the machine's CPU count (more only contend)."""
    return min(requested, os.cpu_count() or 1)


def per_process_batch_size(cfg, world_size):
    """Training images per process: train_dataloader.batch_size when set (an explicit per-process
    override), else total_batch_size / world_size, which must divide evenly."""
    t = cfg["train_dataloader"]
    if t["batch_size"] is not None:
        return t["batch_size"]
    if t["total_batch_size"] % world_size:
        raise ConfigError(f"train_dataloader.total_batch_size={t['total_batch_size']} does not divide over "
                          f"{world_size} processes; choose a multiple of {world_size} or set "
                          "train_dataloader.batch_size (per process)")
    return t["total_batch_size"] // world_size


def describe_batch(cfg, world_size):
    """One log line: the effective (total) batch and where it comes from."""
    per = per_process_batch_size(cfg, world_size)
    source = ("train_dataloader.batch_size (per process; total_batch_size "
              f"{cfg['train_dataloader']['total_batch_size']} not used)"
              if cfg["train_dataloader"]["batch_size"] is not None else "train_dataloader.total_batch_size")
    return f"batch: {per} per process x {world_size} process(es) = {per * world_size} in total, from {source}"


def build_train_loader(cfg, seed, classes=None):
    """Training loader; its dataset's `classes` is the class set (from the file unless given)."""
    t = cfg["train_dataloader"]
    batch_size = per_process_batch_size(cfg, du.world_size())
    stop_epoch = max(cfg["epochs"] - t["no_aug_epochs"], 0)
    dataset = build_dataset(t["dataset"]["img_folder"], t["dataset"]["ann_file"], train=True,
                            image_size=t["image_size"], remap_mscoco_category=cfg["remap_mscoco_category"],
                            num_classes=cfg["num_classes"], stop_epoch=stop_epoch, classes=classes,
                            exif_transpose=t["dataset"]["exif_transpose"])
    sampler = DistributedSampler(dataset, num_replicas=du.world_size(), rank=du.rank(), shuffle=True, seed=seed)
    # any-depth self-distillation with independent scales: a size per pass, resized in FullAndMin
    passes = 2 if cfg["anydepth"]["independent_scales"] else 1
    collate_fn = MultiScaleCollate(t["multi_scale"], stop_epoch=stop_epoch, seed=seed + du.rank(), passes=passes) \
        if t["multi_scale"] else collate
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers(t["num_workers"]),
                        collate_fn=collate_fn, drop_last=True, pin_memory=torch.cuda.is_available(),
                        persistent_workers=False)
    if len(loader) == 0:
        raise ValueError(f"{t['dataset']['ann_file']}: {len(dataset)} images per {du.world_size()} process(es) "
                         f"is less than one batch of {batch_size} per process (train_dataloader.batch_size / "
                         "total_batch_size)")
    return loader


def set_epoch(loader, epoch):
    """Epoch-dependent state: sampler shuffle, strong-augmentation and multi-scale stop."""
    loader.sampler.set_epoch(epoch)
    loader.dataset.set_epoch(epoch)
    if hasattr(loader.collate_fn, "set_epoch"):
        loader.collate_fn.set_epoch(epoch)


def build_val_loader(cfg, max_images=None, classes=None):
    """(loader over this rank's share, the CocoDetection, image ids covered or None for all).

    classes: the ClassSet to label with (the training set's or a checkpoint's); without it,
    the val file's own categories decide (rtdetr_fine/data/classes.py).
    """
    v = cfg["val_dataloader"]
    dataset = build_dataset(v["dataset"]["img_folder"], v["dataset"]["ann_file"], train=False,
                            image_size=v["image_size"], remap_mscoco_category=cfg["remap_mscoco_category"],
                            num_classes=cfg["num_classes"], classes=classes,
                            exif_transpose=v["dataset"]["exif_transpose"])
    if len(dataset) == 0:
        raise ValueError(f"{v['dataset']['ann_file']}: the val set has no images ('images' is empty): nothing to "
                         "evaluate (val_dataloader.dataset.ann_file)")
    subset, img_ids = dataset, None
    if max_images is not None:
        indices = list(range(min(max_images, len(dataset))))
        subset, img_ids = Subset(dataset, indices), [int(dataset.ids[i]) for i in indices]
    sampler = DistributedSampler(subset, num_replicas=du.world_size(), rank=du.rank(), shuffle=False) \
        if du.world_size() > 1 else None
    loader = DataLoader(subset, batch_size=v["batch_size"], sampler=sampler, shuffle=False,
                        num_workers=workers(v["num_workers"]), collate_fn=collate,
                        pin_memory=torch.cuda.is_available())
    return loader, dataset, img_ids
