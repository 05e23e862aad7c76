"""Class sets: how num_classes and remap_mscoco_category decide labels, checkpoints, inference fallbacks."""
import pytest
import torch
from helpers import config_path

import rtdetr_fine
from rtdetr_fine.data.classes import ClassSet, class_set_from_categories, class_set_from_checkpoint, coco_class_set
from rtdetr_fine.data.coco_ids import COCO_LABEL_TO_CATEGORY, COCO_NAMES
from rtdetr_fine.config import ConfigError

CATS = [{"id": 90, "name": "circle"}, {"id": 3, "name": "square"}, {"id": 17, "name": "triangle"}]


def test_auto_without_remap_counts_the_files_categories_in_id_order():
    classes = class_set_from_categories(CATS, "auto", False, "f.json")
    assert classes.num_classes == 3 and classes.category_ids == (3, 17, 90)
    assert classes.names == ("square", "triangle", "circle")
    assert classes.category2label == {3: 0, 17: 1, 90: 2} and classes.label2category == {0: 3, 1: 17, 2: 90}


def test_integer_num_classes_without_remap_may_exceed_the_categories():
    classes = class_set_from_categories(CATS, 5, False, "f.json")
    assert classes.num_classes == 5 and classes.label2category == {0: 3, 1: 17, 2: 90}   # labels 3, 4: none
    with pytest.raises(ValueError, match=r"f\.json needs 3 classes.*num_classes=2"):
        class_set_from_categories(CATS, 2, False, "f.json")


def test_remap_keeps_cocos_80_labels_and_the_files_names():
    classes = class_set_from_categories(CATS, "auto", True, "f.json")
    assert classes.num_classes == 80 and list(classes.category_ids) == COCO_LABEL_TO_CATEGORY
    assert classes.category2label[90] == 79 and classes.category2label[3] == 2 and classes.category2label[17] == 15
    assert classes.names[79] == "circle" and classes.names[0] == COCO_NAMES[0] == "person"
    assert class_set_from_categories(CATS, 80, True, "f.json").category_ids == classes.category_ids
    with pytest.raises(ValueError, match=r"needs 80 classes .*num_classes=40"):      # id 90 is label 79
        class_set_from_categories(CATS, 40, True, "f.json")
    assert coco_class_set().names == tuple(COCO_NAMES) and coco_class_set().remap_mscoco_category


def test_bad_values():
    with pytest.raises(ValueError, match="no 'categories'"):
        class_set_from_categories([], "auto", False, "f.json")
    with pytest.raises(ValueError, match="positive integer or 'auto'"):
        class_set_from_categories(CATS, 0, False, "f.json")
    with pytest.raises(ValueError, match="duplicate"):
        ClassSet(3, (1, 1), ("a", "b"))


def test_checkpoint_round_trip_and_count_mismatch(tmp_path):
    classes = class_set_from_categories(CATS, "auto", False, "f.json")
    path = tmp_path / "c.pth"
    torch.save({"model": {}, "classes": classes.to_dict()}, path)
    loaded = torch.load(path, weights_only=True)
    assert class_set_from_checkpoint(loaded, str(path)) == classes
    assert class_set_from_checkpoint({"model": {}}, str(path)) is None   # official / older checkpoints
    with pytest.raises(ValueError, match=r"checkpoint x\.pth: unreadable class set"):
        class_set_from_checkpoint({"classes": {"num_classes": 3}}, "x.pth")
    assert classes.same_labels(ClassSet(3, (3, 17, 90), ("a", "b", "c")))
    assert not classes.same_labels(ClassSet(4, (3, 17, 90), ("a", "b", "c")))


def test_config_num_classes_is_auto_by_default_and_coco_configs_keep_80():
    from rtdetr_fine.config import DEFAULTS
    assert DEFAULTS["num_classes"] == "auto" and DEFAULTS["remap_mscoco_category"] is False
    for name in ("rtdetr_r18.yml", "rtdetr_r18_fine.yml", "rtdetr_r50_fine.yml"):
        cfg = rtdetr_fine.load_config(config_path(name))
        assert cfg["num_classes"] == 80 and cfg["remap_mscoco_category"] is True, name
    assert rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), ["num_classes=auto"])["num_classes"] == "auto"
    for bad in ("num_classes=many", "num_classes=0", "num_classes=true"):
        with pytest.raises(ConfigError, match="num_classes"):
            rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), [bad])


def test_building_with_unresolved_auto_is_a_clear_error():
    cfg = rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), ["num_classes=auto", "backbone.pretrained=null"])
    with pytest.raises(ValueError, match="num_classes is 'auto'"):
        rtdetr_fine.build_model(cfg)


def test_a_class_count_beyond_the_num_classes_bound_names_its_source(tmp_path):
    """Issue 25: num_classes=10**12 is a config error; the same count from a file or checkpoint names that."""
    from rtdetr_fine.config import MAX_CLASSES
    categories = [{"id": i, "name": f"c{i}"} for i in range(MAX_CLASSES + 1)]
    with pytest.raises(ValueError, match=rf"big\.json has {MAX_CLASSES + 1} categories, more than the {MAX_CLASSES}"):
        class_set_from_categories(categories, "auto", False, "big.json")
    for n in (10**12, MAX_CLASSES + 1):
        with pytest.raises(ValueError, match=rf"checkpoint x\.pth: its class set has num_classes={n}, outside "
                                             rf"1\.\.{MAX_CLASSES}"):
            ClassSet.from_dict({"num_classes": n, "category_ids": [1], "names": ["a"]}, "checkpoint x.pth")
