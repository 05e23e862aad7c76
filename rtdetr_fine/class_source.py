"""Which class set a run uses: the one a checkpoint records, else the annotation file's, else COCO's.

The ClassSet itself and how num_classes / remap_mscoco_category decide it are in classes.py; this
module reads the files (checkpoint, annotation file) that say which one applies, so it sits above
the data and checkpoint modules that classes.py must stay below.
"""
from __future__ import annotations

import os

from .checkpoint import read_checkpoint
from .classes import AUTO, ClassSet, class_set_from_categories, class_set_from_checkpoint, coco_class_set
from .data.coco import read_coco_json
from .loaders import config_ann_file


def recorded_class_set(path: str, num_classes) -> ClassSet | None:
    """The class set checkpoint `path` records, or None: none recorded (official or older
    checkpoints), or the config's num_classes (int or "auto") asks for another class count, in
    which case loading the weights reports the mismatch. Errors name the file."""
    classes = class_set_from_checkpoint(read_checkpoint(path), path)
    if classes is not None and num_classes not in (AUTO, classes.num_classes):
        return None
    return classes


def inference_class_set(cfg: dict, checkpoint: str | None = None) -> tuple:
    """(ClassSet, where it came from) for running a model: the class set checkpoint `checkpoint`
    records, else that of the config's annotation file (its val split), else COCO's 80 (when
    remap_mscoco_category or num_classes is 80), else label numbers. ValueError names the file."""
    if checkpoint:
        classes = recorded_class_set(checkpoint, cfg["num_classes"])
        if classes is not None:
            return classes, f"checkpoint {checkpoint}"
    ann_file = config_ann_file(cfg)
    if os.path.isfile(ann_file):
        categories = read_coco_json(ann_file)["categories"]
        return class_set_from_categories(categories, cfg["num_classes"], cfg["remap_mscoco_category"],
                                         ann_file), ann_file
    n = cfg["num_classes"]
    if n == AUTO:
        raise ValueError("num_classes is auto, but there is no class set to take it from: "
                         + ("the checkpoint records none and " if checkpoint else "")
                         + f"the config's annotation file {ann_file} is not there; give a train.py checkpoint, "
                         "the annotation file, or -u num_classes=N")
    if cfg["remap_mscoco_category"] or n == 80:
        return coco_class_set(n), "COCO's 80 categories"
    return ClassSet(n, tuple(range(n)), tuple(f"class {i}" for i in range(n))), "label numbers (no names known)"
