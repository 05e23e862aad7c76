import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rtdetr_fine.data import CocoDetection, make_shapes_dataset
from rtdetr_fine.data.synthetic import SHAPES

SMALL = dict(num_train=12, num_val=4, image_size=96)


def pixel_hash(paths):
    digest = hashlib.sha256()
    for split in ("train", "val"):
        for name in sorted(os.listdir(paths[f"{split}_img_folder"])):
            digest.update(np.asarray(Image.open(Path(paths[f"{split}_img_folder"]) / name)).tobytes())
    return digest.hexdigest()


def all_files(root):
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in Path(root).rglob("*") if p.is_file()}


def test_deterministic(tmp_path):
    a = make_shapes_dataset(tmp_path / "a", **SMALL)
    b = make_shapes_dataset(tmp_path / "b", **SMALL)
    for key in ("train_ann_file", "val_ann_file"):
        assert Path(a[key]).read_bytes() == Path(b[key]).read_bytes()
    assert pixel_hash(a) == pixel_hash(b)
    c = make_shapes_dataset(tmp_path / "c", **{**SMALL, "seed": 1})
    assert Path(c["train_ann_file"]).read_bytes() != Path(a["train_ann_file"]).read_bytes()


def test_cached_and_regenerated(tmp_path):
    paths = make_shapes_dataset(tmp_path, **SMALL)
    before = all_files(tmp_path)
    assert paths == make_shapes_dataset(tmp_path, **SMALL)
    assert all_files(tmp_path) == before                                   # nothing rewritten

    # an interrupted generation leaves no manifest: the next call regenerates
    os.remove(tmp_path / "manifest.json")
    os.remove(paths["val_ann_file"])
    make_shapes_dataset(tmp_path, **SMALL)
    assert (tmp_path / "manifest.json").exists() and os.path.exists(paths["val_ann_file"])

    # a missing image also invalidates the cache
    os.remove(Path(paths["train_img_folder"]) / "000005.jpg")
    make_shapes_dataset(tmp_path, **SMALL)
    assert (Path(paths["train_img_folder"]) / "000005.jpg").exists()

    # other parameters -> new set, new manifest
    make_shapes_dataset(tmp_path, **{**SMALL, "num_val": 5})
    assert len(json.loads(Path(paths["val_ann_file"]).read_text())["images"]) == 5
    assert json.loads((tmp_path / "manifest.json").read_text())["params"]["num_val"] == 5


def test_coco_format_and_content(shapes):
    for split, n in (("train", 24), ("val", 6)):
        data = json.loads(Path(shapes[f"{split}_ann_file"]).read_text())
        assert [c["id"] for c in data["categories"]] == [1, 2, 3]
        assert [c["name"] for c in data["categories"]] == ["circle", "square", "triangle"]
        assert len(data["images"]) == n
        per_image = [sum(a["image_id"] == img["id"] for a in data["annotations"]) for img in data["images"]]
        assert 0 in per_image and max(per_image) <= 4
        assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
        ds = CocoDetection(shapes[f"{split}_img_folder"], shapes[f"{split}_ann_file"], num_classes=3)
        assert ds.stats["dropped"] == 0 and ds.stats["clipped"] == 0
        image, target = ds[0]
        assert image.size == (128, 128)


def colour_distance(image, x, y, colour):
    patch = image[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2].reshape(-1, 3).mean(0)
    return np.abs(patch - np.asarray(colour)).max()


def test_boxes_tightly_enclose_shapes(shapes):
    data = json.loads(Path(shapes["train_ann_file"]).read_text())
    images = {img["id"]: img for img in data["images"]}
    checked = 0
    for ann in data["annotations"]:
        name, colour = SHAPES[ann["category_id"] - 1]
        image = np.asarray(Image.open(Path(shapes["train_img_folder"]) / images[ann["image_id"]]["file_name"]),
                           dtype=np.float32)
        x, y, w, h = ann["bbox"]
        assert w >= 9 and h >= 9 and x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128
        cx, cy = x + w // 2, y + h // 2
        assert colour_distance(image, cx, cy, colour) < 45, ann              # centre is the shape
        if name not in ("square", "circle"):
            continue
        # each side of the box touches the shape (at mid-side for squares and circles) ...
        for px, py in ((x + 1, cy), (x + w - 2, cy), (cx, y + 1), (cx, y + h - 2)):
            assert colour_distance(image, px, py, colour) < 70, (ann, px, py)
        # ... and just outside the box there is background
        for px, py in ((x - 3, cy), (x + w + 2, cy), (cx, y - 3), (cx, y + h + 2)):
            if 0 <= px < 128 and 0 <= py < 128:
                assert colour_distance(image, px, py, colour) > 60, (ann, px, py)
        checked += 1
    assert checked >= 10


def test_class_count_limits(tmp_path):

    paths = make_shapes_dataset(tmp_path / "six", num_train=10, num_val=2, image_size=64, num_classes=6)
    names = [c["name"] for c in json.loads(Path(paths["val_ann_file"]).read_text())["categories"]]
    assert names == [name for name, _ in SHAPES]
    with pytest.raises(ValueError, match="num_classes"):
        make_shapes_dataset(tmp_path / "seven", num_classes=7)


def test_the_generator_writes_only_into_a_folder_it_made_or_an_empty_one(tmp_path):
    """demo.root= a user's folder: refused, naming it, nothing written (issue 25)."""
    from rtdetr_fine.data.synthetic import MARKER
    user = tmp_path / "mine"
    (user / "annotations").mkdir(parents=True)
    (user / "annotations" / "instances_train.json").write_text("my annotations")
    with pytest.raises(ValueError, match=f"demo.root {user} is a folder the demo generator did not make "
                                         r"\(it holds annotations; no"):
        make_shapes_dataset(user, **SMALL)
    assert (user / "annotations" / "instances_train.json").read_text() == "my annotations"
    assert sorted(p.name for p in user.rglob("*")) == ["annotations", "instances_train.json"]
    (tmp_path / "empty").mkdir()
    make_shapes_dataset(tmp_path / "empty", **SMALL)                          # empty: made its own
    assert (tmp_path / "empty" / MARKER).is_file()
    os.remove(tmp_path / "empty" / "manifest.json")                           # a killed generation: its marker
    make_shapes_dataset(tmp_path / "empty", **SMALL)                          # lets it finish
    legacy = tmp_path / "legacy"                                              # made before the marker existed
    make_shapes_dataset(legacy, **SMALL)
    os.remove(legacy / MARKER)
    make_shapes_dataset(legacy, **{**SMALL, "num_val": 5})
    with pytest.raises(ValueError, match="is a file"):
        (tmp_path / "f").write_text("x")
        make_shapes_dataset(tmp_path / "f", **SMALL)
