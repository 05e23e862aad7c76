"""COCO-format detection dataset: annotation checks, label mapping, box hygiene."""
import contextlib
import io
import json
import logging
import math
import os

import numpy as np
import torch
from pycocotools.coco import COCO
from torchvision import tv_tensors

from .classes import AUTO, class_set_from_categories
from .coco_ids import COCO_CATEGORY_TO_LABEL, COCO_LABEL_TO_CATEGORY
from .image_io import load_rgb_image

logger = logging.getLogger(__name__)

# The 80 category ids used by COCO 2017 detection (ids run 1..90 with gaps).
MSCOCO_CATEGORY_IDS = tuple(COCO_LABEL_TO_CATEGORY)
mscoco_category2label = dict(COCO_CATEGORY_TO_LABEL)
mscoco_label2category = dict(enumerate(COCO_LABEL_TO_CATEGORY))


class CocoFormatError(ValueError):
    """The annotation file is not a usable COCO detection file."""


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x):
    return isinstance(x, int) and not isinstance(x, bool)   # JSON true is not an id (it equals 1 in Python)


def _ann_name(ann, index):
    return f"annotation id {ann['id']}" if isinstance(ann, dict) and "id" in ann else f"annotation #{index}"


def read_coco_json(ann_file):
    """Load and structurally validate a COCO detection annotation file -> dict."""
    try:
        with open(ann_file, "rb") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CocoFormatError(f"{ann_file}: not a valid JSON file ({e})") from e
    except OSError as e:
        raise OSError(f"cannot read annotation file {ann_file}: {e.strerror or e}") from None
    if not isinstance(data, dict):
        raise CocoFormatError(f"{ann_file}: top level must be a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise CocoFormatError(f"{ann_file}: missing top-level key '{key}' (COCO detection format "
                                  "needs 'images', 'annotations' and 'categories')")
        if not isinstance(data[key], list):
            raise CocoFormatError(f"{ann_file}: '{key}' must be a list, got {type(data[key]).__name__}")

    image_ids = set()
    files = {}   # normalised file_name -> the image id that names it
    for i, img in enumerate(data["images"]):
        name = f"image id {img.get('id')}" if isinstance(img, dict) else f"image #{i}"
        if not isinstance(img, dict) or not _is_int(img.get("id")):
            raise CocoFormatError(f"{ann_file}: {name} has no integer 'id'")
        if not isinstance(img.get("file_name"), str):
            raise CocoFormatError(f"{ann_file}: {name} has no 'file_name'")
        for key in ("width", "height"):
            if not _is_int(img.get(key)) or img[key] <= 0:
                raise CocoFormatError(f"{ann_file}: {name} needs a positive integer '{key}', got {img.get(key)!r}")
        if img["id"] in image_ids:
            raise CocoFormatError(f"{ann_file}: duplicate {name}")
        image_ids.add(img["id"])
        file_key = os.path.normpath(img["file_name"])
        if file_key in files:   # its objects would be trained twice, and scored as two images
            raise CocoFormatError(f"{ann_file}: image ids {files[file_key]} and {img['id']} name the same file "
                                  f"{img['file_name']!r}; list each image once (its annotations under one id)")
        files[file_key] = img["id"]

    category_ids = set()
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")):
            raise CocoFormatError(f"{ann_file}: category #{i} has no integer 'id'"
                                  + (f" (got {cat.get('id')!r})" if isinstance(cat, dict) and "id" in cat else ""))
        if cat["id"] in category_ids:
            raise CocoFormatError(f"{ann_file}: duplicate category id {cat['id']}")
        category_ids.add(cat["id"])

    ann_ids = set()
    for i, ann in enumerate(data["annotations"]):
        name = _ann_name(ann, i)
        if not isinstance(ann, dict) or "id" not in ann:
            raise CocoFormatError(f"{ann_file}: {name} has no 'id'")
        if ann["id"] in ann_ids:
            raise CocoFormatError(f"{ann_file}: duplicate {name}")
        ann_ids.add(ann["id"])
        if not _is_int(ann.get("image_id")) or ann["image_id"] not in image_ids:
            raise CocoFormatError(f"{ann_file}: {name} refers to image_id {ann.get('image_id')!r}, "
                                  "which is not in 'images'")
        if not _is_int(ann.get("category_id")):
            raise CocoFormatError(f"{ann_file}: {name} has no integer 'category_id'"
                                  + (f" (got {ann['category_id']!r})" if "category_id" in ann else ""))
        if ann["category_id"] not in category_ids:
            raise CocoFormatError(f"{ann_file}: {name} has category_id {ann['category_id']}, which is not among "
                                  f"the file's 'categories' (ids {sorted(category_ids)[:20]}"
                                  f"{' ...' if len(category_ids) > 20 else ''})")
        bbox = ann.get("bbox")
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            raise CocoFormatError(f"{ann_file}: {name} has bbox {bbox!r}; expected 4 finite numbers "
                                  "[x, y, width, height]")
        if ann.get("iscrowd", 0) not in (0, 1):
            raise CocoFormatError(f"{ann_file}: {name} has iscrowd={ann.get('iscrowd')!r}; expected 0 or 1")
    return data


def clean_boxes(anns, width, height, category2label, ann_file, unmapped_hint=""):
    """COCO anns of one image -> (boxes xyxy float32 [N, 4], labels int64 [N], area float32 [N], counts).

    A category without a label is an error naming the annotation, with `unmapped_hint` (why, what to do).

    Crowd boxes are left out, zero/negative-size boxes and boxes wholly outside the
    image are dropped, the rest are clipped to [0, width] x [0, height].
    """
    boxes, labels, areas = [], [], []
    counts = {"crowd": 0, "degenerate": 0, "outside": 0, "clipped": 0}
    for ann in anns:
        if ann["category_id"] not in category2label:
            raise CocoFormatError(f"{ann_file}: annotation id {ann['id']} has category_id {ann['category_id']}, "
                                  f"which has no label{unmapped_hint}")
        if ann.get("iscrowd", 0):
            counts["crowd"] += 1
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        if w <= 0 or h <= 0:
            counts["degenerate"] += 1
            continue
        box = [x, y, x + w, y + h]
        clipped = [min(max(box[0], 0.0), width), min(max(box[1], 0.0), height),
                   min(max(box[2], 0.0), width), min(max(box[3], 0.0), height)]
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            counts["outside"] += 1
            continue
        counts["clipped"] += clipped != box
        area = ann.get("area")
        boxes.append(clipped)
        labels.append(category2label[ann["category_id"]])
        areas.append(float(area) if _is_number(area) else (clipped[2] - clipped[0]) * (clipped[3] - clipped[1]))
    return (np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels, dtype=np.int64),
            np.asarray(areas, dtype=np.float32), counts)


class CocoDetection(torch.utils.data.Dataset):
    """COCO-format detection set. Item: (image, target), before `transforms`:

    image: PIL RGB, EXIF orientation applied; target: boxes BoundingBoxes xyxy absolute
    [N, 4], labels int64 [N], image_id int64 [], area float32 [N], iscrowd int64 [N] (all 0:
    crowd regions are not training targets), orig_size int64 [2] = (w, h).
    All images of the file are samples, also those without boxes.

    Labels follow `classes` (a ClassSet) when given, else the class set of the file's
    categories under num_classes (int or "auto"; None: "auto") and remap_mscoco_category.
    """

    def __init__(self, img_folder, ann_file, transforms=None, remap_mscoco_category=False,
                 num_classes=None, exif_transpose=False, classes=None):
        for path in (img_folder, ann_file):
            if not os.path.exists(path):
                raise FileNotFoundError(f"dataset path does not exist: {path}")
        self.img_folder, self.ann_file = img_folder, ann_file
        self.transforms = transforms
        self.exif_transpose = exif_transpose
        self._reported_orientation = False

        data = read_coco_json(ann_file)
        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco.createIndex()

        cat_ids = sorted(self.coco.cats)
        self.category2name = {c: self.coco.cats[c].get("name", str(c)) for c in cat_ids}
        # labels <-> category ids: given (the training set's, or a checkpoint's), else from this file
        self.classes = classes or class_set_from_categories(
            data["categories"], AUTO if num_classes is None else num_classes, remap_mscoco_category, ann_file)
        self.category2label = self.classes.category2label
        self.label2category = self.classes.label2category
        if self.classes.remap_mscoco_category:
            hint = (": with remap_mscoco_category only COCO's 80 ids have one; for another class set use "
                    "remap_mscoco_category: false, num_classes: auto")
        else:
            hint = (f" in the class set the data is labelled with (the training file's or the checkpoint's, "
                    f"ids {list(self.classes.category_ids)[:20]})")

        self.ids = sorted(self.coco.imgs)
        self._targets = []
        totals = {"crowd": 0, "degenerate": 0, "outside": 0, "clipped": 0}
        for img_id in self.ids:
            info = self.coco.imgs[img_id]
            *target, counts = clean_boxes(self.coco.imgToAnns.get(img_id, []), info["width"], info["height"],
                                          self.category2label, ann_file, hint)
            self._targets.append(tuple(target))
            for k, v in counts.items():
                totals[k] += v
        self.stats = {"dropped": totals["degenerate"] + totals["outside"], **totals,
                      "boxes": sum(len(t[0]) for t in self._targets),
                      "empty_images": sum(len(t[0]) == 0 for t in self._targets)}
        self._report()

    def _report(self):
        s = self.stats
        line = (f"{self.ann_file}: {len(self.ids)} images ({s['empty_images']} without boxes), "
                f"{s['boxes']} boxes; dropped {s['dropped']} ({s['degenerate']} zero/negative size, "
                f"{s['outside']} outside the image), clipped {s['clipped']} to the image border, "
                f"left out {s['crowd']} iscrowd")
        logger.log(logging.WARNING if s["dropped"] or s["clipped"] else logging.INFO, line)

    def __len__(self):
        return len(self.ids)

    def load_image(self, index):
        """PIL RGB image of sample `index`, sized as the annotation file says."""
        info = self.coco.imgs[self.ids[index]]
        path = os.path.join(self.img_folder, info["file_name"])
        image, stored_orientation = load_rgb_image(path, info["id"], (info["width"], info["height"]),
                                                   self.exif_transpose)
        if stored_orientation and not self._reported_orientation:
            self._reported_orientation = True
            logger.warning(f"{path}: EXIF orientation ignored because {self.ann_file} gives the stored "
                           "(un-rotated) size; annotations are taken as relative to the stored pixels "
                           "(reported once per dataset)")
        return image

    def load_target(self, index):
        """Target dict of sample `index` before transforms (see class docstring)."""
        info = self.coco.imgs[self.ids[index]]
        boxes, labels, area = self._targets[index]
        h, w = info["height"], info["width"]
        return {
            "boxes": tv_tensors.BoundingBoxes(torch.tensor(boxes), format="XYXY", canvas_size=(h, w)),
            "labels": torch.tensor(labels),
            "image_id": torch.tensor(info["id"], dtype=torch.int64),
            "area": torch.tensor(area),
            "iscrowd": torch.zeros(len(labels), dtype=torch.int64),
            "orig_size": torch.tensor([w, h], dtype=torch.int64),
        }

    def __getitem__(self, index):
        image, target = self.load_image(index), self.load_target(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def set_epoch(self, epoch):
        """Forward the epoch to epoch-dependent transforms (RT-DETR's stop_epoch policy)."""
        if hasattr(self.transforms, "set_epoch"):
            self.transforms.set_epoch(epoch)

    def __repr__(self):
        return (f"{type(self).__name__}(img_folder={self.img_folder!r}, ann_file={self.ann_file!r}, "
                f"images={len(self)}, categories={len(self.category2name)}, transforms={self.transforms})")
