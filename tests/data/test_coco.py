import json
import logging
import shutil

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from rtdetr_fine.data import CocoDetection, build_dataset, mscoco_category2label, mscoco_label2category
from rtdetr_fine.data.coco import CocoFormatError

LOGGER = "rtdetr_fine.data.coco"
ABSENT_COCO_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}


def write_set(tmp_path, images=None, annotations=None, categories=None, drop_key=None, files=True):
    """A minimal COCO set in tmp_path; returns (img_folder, ann_file)."""
    folder = tmp_path / "img"
    folder.mkdir(exist_ok=True)
    images = images if images is not None else [{"id": 1, "file_name": "a.jpg", "width": 20, "height": 10}]
    if files:
        from PIL import Image
        for img in images:
            Image.new("RGB", (img["width"], img["height"]), (50, 60, 70)).save(folder / img["file_name"])
    data = {"images": images,
            "annotations": annotations if annotations is not None else [],
            "categories": categories if categories is not None else [{"id": 1, "name": "x"}]}
    if drop_key:
        del data[drop_key]
    ann_file = tmp_path / "ann.json"
    ann_file.write_text(json.dumps(data))
    return str(folder), str(ann_file)


def ann(ann_id, bbox, category_id=1, image_id=1, **extra):
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, **extra}


def test_mscoco_label_round_trip():
    assert len(mscoco_category2label) == 80
    assert sorted(mscoco_category2label.values()) == list(range(80))
    assert set(mscoco_category2label) == set(range(1, 91)) - ABSENT_COCO_IDS
    for cat, label in mscoco_category2label.items():
        assert mscoco_label2category[label] == cat
    assert mscoco_category2label[1] == 0 and mscoco_category2label[90] == 79
    # category ids keep their order
    assert [mscoco_label2category[i] for i in range(80)] == sorted(mscoco_category2label)


def test_remap_mscoco_category(tmp_path):
    cats = [{"id": c, "name": str(c)} for c in (1, 13, 90)]
    folder, ann_file = write_set(tmp_path, annotations=[ann(5, [1, 1, 4, 4], 90), ann(6, [2, 2, 4, 4], 13)],
                                 categories=cats)
    ds = CocoDetection(folder, ann_file, remap_mscoco_category=True, num_classes=80)
    assert ds[0][1]["labels"].tolist() == [79, 11]
    assert ds.label2category[79] == 90
    plain = CocoDetection(folder, ann_file)                        # contiguous in sorted id order
    assert plain[0][1]["labels"].tolist() == [2, 1]
    assert plain.label2category == {0: 1, 1: 13, 2: 90}


def test_category_outside_mapping_names_annotation_and_file(tmp_path):
    folder, ann_file = write_set(tmp_path, annotations=[ann(41, [1, 1, 4, 4], 12)],
                                 categories=[{"id": 12, "name": "gap"}])
    with pytest.raises(ValueError, match=r"annotation id 41.*category_id 12") as e:
        CocoDetection(folder, ann_file, remap_mscoco_category=True)
    assert ann_file in str(e.value)
    folder, ann_file = write_set(tmp_path, annotations=[ann(42, [1, 1, 4, 4], 5)])   # 5 not in categories
    with pytest.raises(ValueError, match="annotation id 42") as e:
        CocoDetection(folder, ann_file)
    assert ann_file in str(e.value)


def test_num_classes_too_small(tmp_path):
    folder, ann_file = write_set(tmp_path, categories=[{"id": i, "name": str(i)} for i in (1, 2, 3)])
    with pytest.raises(ValueError, match="num_classes") as e:
        build_dataset(folder, ann_file, train=False, num_classes=2)
    assert ann_file in str(e.value)
    assert len(build_dataset(folder, ann_file, train=False, num_classes=3)) == 1


def test_hygiene_counts_reported_once(hygiene, caplog):
    with caplog.at_level(logging.INFO, logger=LOGGER):
        ds = CocoDetection(hygiene["img_folder"], hygiene["ann_file"], exif_transpose=True)
        for i in range(len(ds)):
            ds[i]
    assert ds.stats == hygiene["expected"]["stats"]
    records = [r for r in caplog.records if r.name == LOGGER]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    message = records[0].getMessage()
    assert "dropped 3" in message and "clipped 2" in message and "1 iscrowd" in message


def test_hygiene_targets_and_images(hygiene):
    ds = CocoDetection(hygiene["img_folder"], hygiene["ann_file"], exif_transpose=True)
    sizes = hygiene["expected"]["sizes"]
    by_name = {}
    for i in range(len(ds)):
        image, target = ds[i]
        name = ds.coco.imgs[ds.ids[i]]["file_name"]
        by_name[name] = (image, target)
        w, h = sizes[name]
        assert image.mode == "RGB" and len(image.getbands()) == 3
        assert image.size == (w, h)
        assert target["orig_size"].tolist() == [w, h]
        assert target["image_id"].dtype == torch.int64 and target["image_id"].ndim == 0
        boxes = target["boxes"]
        assert isinstance(boxes, tv_tensors.BoundingBoxes) and boxes.format == tv_tensors.BoundingBoxFormat.XYXY
        assert tuple(boxes.canvas_size) == (h, w)
        assert boxes.shape[1] == 4 and target["labels"].dtype == torch.int64
        assert len(target["labels"]) == len(boxes) == len(target["area"]) == len(target["iscrowd"])
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= w).all() and (boxes[:, 1::2] <= h).all()
        assert (target["iscrowd"] == 0).all()

    _, t = by_name["boxes.jpg"]                            # crowd [0,0,30,30] left out, two clipped
    assert t["boxes"].tolist() == [[4, 4, 24, 20], [50, 20, 64, 30], [0, 0, 10, 10]]
    assert t["labels"].tolist() == [0, 1, 0]              # category ids 3, 7 -> labels 0, 1
    _, t = by_name["empty.jpg"]
    assert t["boxes"].shape == (0, 4) and t["labels"].shape == (0,)

    for name, (x, y, w, h) in hygiene["expected"]["exif_patches"].items():
        image, t = by_name[name]
        assert t["boxes"].tolist() == [[x, y, x + w, y + h]]
        centre = np.asarray(image)[y + h // 2, x + w // 2].astype(int)
        assert np.abs(centre - hygiene["expected"]["exif_patch_colour"]).max() < 30, (name, centre)
        outside = np.asarray(image)[y + h // 2, x + w + 3].astype(int)
        assert np.abs(outside - 90).max() < 30


def test_missing_paths(tmp_path, hygiene):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        CocoDetection(str(tmp_path / "nowhere"), hygiene["ann_file"])
    with pytest.raises(FileNotFoundError, match="no_ann.json"):
        CocoDetection(hygiene["img_folder"], str(tmp_path / "no_ann.json"))


def test_missing_and_unreadable_image(tmp_path):
    images = [{"id": 7, "file_name": "gone.jpg", "width": 20, "height": 10},
              {"id": 8, "file_name": "junk.jpg", "width": 20, "height": 10}]
    folder, ann_file = write_set(tmp_path, images=images, files=False)
    (tmp_path / "img" / "junk.jpg").write_bytes(b"this is not a jpeg")
    ds = CocoDetection(folder, ann_file)
    with pytest.raises(FileNotFoundError, match=r"gone\.jpg.*image_id 7"):
        ds[0]
    with pytest.raises(OSError, match=r"junk\.jpg.*image_id 8"):
        ds[1]


def test_size_mismatch_names_file(tmp_path):
    folder, ann_file = write_set(tmp_path)
    data = json.loads(open(ann_file).read())
    data["images"][0]["width"] = 33
    open(ann_file, "w").write(json.dumps(data))
    with pytest.raises(ValueError, match=r"a\.jpg.*33 x 10"):
        CocoDetection(folder, ann_file)[0]


def test_exif_ignored_when_json_gives_stored_size(tmp_path, hygiene, caplog):
    """A set annotated on the stored pixels (EXIF ignored by the tool) still loads, warned once."""
    data = json.loads(open(hygiene["ann_file"]).read())
    for img in data["images"]:
        if img["file_name"].startswith("exif"):
            img["width"], img["height"] = img["height"], img["width"]
    ann_file = tmp_path / "stored.json"
    ann_file.write_text(json.dumps(data))
    ds = CocoDetection(hygiene["img_folder"], str(ann_file), exif_transpose=True)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for i in range(len(ds)):
            image, target = ds[i]
            assert image.size == tuple(target["orig_size"].tolist())
    assert sum("EXIF orientation ignored" in r.getMessage() for r in caplog.records) == 1


def test_exif_not_applied_by_default_as_coco_reads_images(hygiene):
    """COCO's boxes refer to the stored pixels (torchvision's CocoDetection ignores EXIF too): by
    default the stored pixels are returned, and a file whose JSON gives the EXIF-rotated size is an
    error that names the file and the switch, not silently misplaced boxes."""
    ds = CocoDetection(hygiene["img_folder"], hygiene["ann_file"])
    rotated = CocoDetection(hygiene["img_folder"], hygiene["ann_file"], exif_transpose=True)
    index = {ds.coco.imgs[i]["file_name"]: k for k, i in enumerate(ds.ids)}
    with pytest.raises(ValueError, match=r"exif6\.jpg.*exif_transpose"):
        ds[index["exif6.jpg"]]
    plain, _ = ds[index["boxes.jpg"]]
    assert np.array_equal(np.asarray(plain), np.asarray(rotated[index["boxes.jpg"]][0]))


def test_broken_json_names_file(tmp_path):
    ann_file = tmp_path / "broken.json"
    ann_file.write_text('{"images": [')
    (tmp_path / "img").mkdir()
    with pytest.raises(CocoFormatError, match="broken.json.*not a valid JSON"):
        CocoDetection(str(tmp_path / "img"), str(ann_file))


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_key_names_file_and_key(tmp_path, key):
    folder, ann_file = write_set(tmp_path, drop_key=key)
    with pytest.raises(CocoFormatError, match=f"ann.json.*'{key}'"):
        CocoDetection(folder, ann_file)


@pytest.mark.parametrize("bbox", [[1, 2, 3], ["1", 2, 3, 4], [1, 2, 3, float("nan")], None, [1, 2, 3, 4, 5]])
def test_bad_bbox_names_file_and_annotation(tmp_path, bbox):
    annotations = [ann(1, [0, 0, 5, 5]), ann(977, bbox)]
    folder, ann_file = write_set(tmp_path, annotations=annotations)
    with pytest.raises(CocoFormatError, match=r"ann\.json.*annotation id 977.*bbox") as e:
        CocoDetection(folder, ann_file)
    assert isinstance(e.value, ValueError)


def test_unknown_image_id_names_annotation(tmp_path):
    folder, ann_file = write_set(tmp_path, annotations=[ann(55, [0, 0, 5, 5], image_id=99)])
    with pytest.raises(CocoFormatError, match=r"annotation id 55.*image_id 99"):
        CocoDetection(folder, ann_file)


def test_image_folder_copy_still_loads(tmp_path, hygiene):
    """img_folder is joined with file_name: moving the set keeps it valid."""
    shutil.copytree(hygiene["img_folder"], tmp_path / "moved")
    ds = CocoDetection(str(tmp_path / "moved"), hygiene["ann_file"])
    assert ds[len(ds) - 1][0].size == (50, 50)


def test_category_not_among_the_files_categories_names_annotation_and_file(tmp_path):
    folder, ann_file = write_set(tmp_path, annotations=[ann(7, [1, 1, 4, 4], 17), ann(8, [2, 2, 4, 4], 4)],
                                 categories=[{"id": 17, "name": "a"}, {"id": 90, "name": "b"}])
    with pytest.raises(CocoFormatError, match=r"annotation id 8 has category_id 4, which is not among") as e:
        CocoDetection(folder, ann_file)
    assert ann_file in str(e.value) and "[17, 90]" in str(e.value)


def test_remap_with_a_non_coco_id_suggests_auto(tmp_path):
    folder, ann_file = write_set(tmp_path, annotations=[ann(9, [1, 1, 4, 4], 91)],
                                 categories=[{"id": 91, "name": "new"}])
    with pytest.raises(CocoFormatError, match=r"annotation id 9 has category_id 91.*num_classes: auto"):
        CocoDetection(folder, ann_file, remap_mscoco_category=True)
    ds = CocoDetection(folder, ann_file, num_classes="auto")              # without remap: one class
    assert ds.classes.category_ids == (91,) and ds[0][1]["labels"].tolist() == [0]


def test_given_class_set_labels_a_file_with_fewer_categories(tmp_path):
    """A val file that lists a subset of the training categories keeps the training labels."""
    from rtdetr_fine.data.classes import ClassSet
    train_classes = ClassSet(3, (3, 17, 90), ("square", "triangle", "circle"))
    folder, ann_file = write_set(tmp_path, annotations=[ann(1, [1, 1, 4, 4], 90), ann(2, [2, 2, 4, 4], 17)],
                                 categories=[{"id": 90, "name": "circle"}, {"id": 17, "name": "triangle"}])
    assert CocoDetection(folder, ann_file)[0][1]["labels"].tolist() == [1, 0]       # its own mapping
    ds = CocoDetection(folder, ann_file, classes=train_classes)
    assert ds[0][1]["labels"].tolist() == [2, 1] and ds.label2category == {0: 3, 1: 17, 2: 90}
    folder, ann_file = write_set(tmp_path, annotations=[ann(3, [1, 1, 4, 4], 5)], categories=[{"id": 5, "name": "new"}])
    with pytest.raises(CocoFormatError, match=r"annotation id 3 has category_id 5, which has no label in the class "
                                              r"set .*ids \[3, 17, 90\]"):
        CocoDetection(folder, ann_file, classes=train_classes)


@pytest.mark.parametrize("where", ["annotation", "category", "image", "image_id"])
def test_a_boolean_is_not_an_id(tmp_path, where):
    """Issue 25: JSON `true` equals 1 in Python; it was accepted as category 1 and written back as `true`."""
    annotations, categories = [ann(5, [0, 0, 5, 5])], [{"id": 1, "name": "x"}]
    images = [{"id": 1, "file_name": "a.jpg", "width": 20, "height": 10}]
    message = {"annotation": r"annotation id 5 has no integer 'category_id' \(got True\)",
               "category": r"category #0 has no integer 'id' \(got True\)",
               "image": r"image id True has no integer 'id'",
               "image_id": r"annotation id 5 refers to image_id True"}[where]
    if where == "annotation":
        annotations[0]["category_id"] = True
    elif where == "category":
        categories[0]["id"] = True
    elif where == "image":
        images[0]["id"] = True
    else:
        annotations[0]["image_id"] = True
    folder, ann_file = write_set(tmp_path, images=images, annotations=annotations, categories=categories)
    with pytest.raises(CocoFormatError, match=r"ann\.json: " + message):
        CocoDetection(folder, ann_file)


@pytest.mark.parametrize("second", ["a.jpg", "./a.jpg", "sub/../a.jpg"])
def test_one_image_file_under_two_ids_is_refused_naming_both(tmp_path, second):
    images = [{"id": 3, "file_name": "a.jpg", "width": 20, "height": 10},
              {"id": 8, "file_name": second, "width": 20, "height": 10}]
    folder, ann_file = write_set(tmp_path, images=images[:1])
    folder, ann_file = write_set(tmp_path, images=images, files=False)
    with pytest.raises(CocoFormatError, match=rf"ann\.json: image ids 3 and 8 name the same file '{second}'"):
        CocoDetection(folder, ann_file)
