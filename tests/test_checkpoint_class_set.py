"""Which class set a run uses: the checkpoint's (when its count fits the config), else the annotation file's, else COCO's."""
import json

import pytest
import torch
from helpers import config_path

import rtdetr_fine
from rtdetr_fine.checkpoint import inference_class_set, recorded_class_set
from rtdetr_fine.data.classes import ClassSet, class_set_from_categories, coco_class_set

CATS = [{"id": 90, "name": "circle"}, {"id": 3, "name": "square"}, {"id": 17, "name": "triangle"}]


def test_recorded_class_set_is_the_checkpoints_unless_the_config_asks_for_another_count(tmp_path):
    classes = class_set_from_categories(CATS, "auto", False, "f.json")
    path = tmp_path / "c.pth"
    torch.save({"model": {}, "classes": classes.to_dict()}, path)
    assert recorded_class_set(str(path), "auto") == classes and recorded_class_set(str(path), 3) == classes
    assert recorded_class_set(str(path), 4) is None               # the config asks for another count
    torch.save({"model": {}}, path)
    assert recorded_class_set(str(path), "auto") is None          # official / older checkpoints


def test_inference_class_set_falls_back_from_checkpoint_to_file_to_coco(tmp_path):
    cfg = rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), [
        f"val_dataloader.dataset.ann_file={tmp_path / 'missing.json'}"])
    classes, source = inference_class_set(cfg)
    assert classes == coco_class_set() and "COCO" in source           # COCO config, no annotation file
    ann = tmp_path / "val.json"
    ann.write_text(json.dumps({"images": [], "annotations": [], "categories": CATS}))
    cfg = rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), [
        f"val_dataloader.dataset.ann_file={ann}", "num_classes=auto", "remap_mscoco_category=false"])
    classes, source = inference_class_set(cfg)
    assert classes.category_ids == (3, 17, 90) and source == str(ann)
    ckpt = tmp_path / "c.pth"
    torch.save({"classes": ClassSet(2, (5, 6), ("five", "six")).to_dict()}, ckpt)
    assert inference_class_set(cfg, str(ckpt))[0].names == ("five", "six")
    cfg["val_dataloader"]["dataset"]["ann_file"] = str(tmp_path / "gone.json")
    with pytest.raises(ValueError, match="num_classes is auto.*gone.json"):
        inference_class_set(cfg)
    cfg["num_classes"] = 4
    assert inference_class_set(cfg)[0].names == ("class 0", "class 1", "class 2", "class 3")
