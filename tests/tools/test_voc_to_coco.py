"""tools/voc_to_coco.py: a VOCdevkit tree -> a COCO file our dataset reads, difficult objects as crowd."""
import os
import sys

import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import voc_to_coco  # noqa: E402

from rtdetr_fine.data import CocoDetection  # noqa: E402

XML = """<annotation><size><width>{w}</width><height>{h}</height><depth>3</depth></size>{objects}</annotation>"""
OBJECT = ("<object><name>{name}</name><difficult>{difficult}</difficult>"
          "<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")


def make_devkit(root, year, split, images):
    """images: {id: (w, h, [(name, difficult, x1, y1, x2, y2)])}"""
    base = root / f"VOC{year}"
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(images) + "\n")
    for image_id, (w, h, objects) in images.items():
        Image.new("RGB", (w, h), (90, 90, 90)).save(base / "JPEGImages" / f"{image_id}.jpg")
        xml = "".join(OBJECT.format(name=n, difficult=d, x1=x1, y1=y1, x2=x2, y2=y2)
                      for n, d, x1, y1, x2, y2 in objects)
        (base / "Annotations" / f"{image_id}.xml").write_text(XML.format(w=w, h=h, objects=xml))


def test_voc07_plus_12_converts_into_one_coco_file(tmp_path):
    make_devkit(tmp_path, 2007, "trainval",
                {"000005": (60, 40, [("dog", 0, 11, 6, 30, 25), ("cat", 1, 1, 1, 10, 10)])})
    make_devkit(tmp_path, 2012, "trainval", {"2008_000001": (50, 50, [("tvmonitor", 0, 1, 1, 50, 50)])})
    out = tmp_path / "annotations" / "voc0712_trainval.json"
    assert voc_to_coco.main([str(tmp_path), "--sets", "2007/trainval", "2012/trainval", "-o", str(out)]) == 0
    dataset = CocoDetection(str(tmp_path), str(out), num_classes=20)
    assert len(dataset) == 2 and dataset.classes.num_classes == 20
    image, target = dataset[0]
    assert image.size == (60, 40)
    assert target["boxes"].tolist() == [[10.0, 5.0, 30.0, 25.0]]        # 1-based inclusive -> continuous
    assert target["labels"].tolist() == [voc_to_coco.VOC_CLASSES.index("dog")]
    assert dataset.stats["crowd"] == 1                                  # the difficult cat: ignored, not trained
    _, target = dataset[1]
    assert target["boxes"].tolist() == [[0.0, 0.0, 50.0, 50.0]] and target["labels"].tolist() == [19]


def test_errors_name_the_file(tmp_path, capsys):
    make_devkit(tmp_path, 2007, "test", {"000001": (20, 20, [("unicorn", 0, 1, 1, 5, 5)])})
    assert voc_to_coco.main([str(tmp_path), "--sets", "2007/test", "-o", str(tmp_path / "x.json")]) == 1
    err = capsys.readouterr().err
    assert "000001.xml" in err and "unicorn" in err
    assert voc_to_coco.main([str(tmp_path), "--sets", "2012/val", "-o", str(tmp_path / "x.json")]) == 1
    assert "VOC2012/ImageSets/Main/val.txt" in capsys.readouterr().err
    with pytest.raises(voc_to_coco.VOCFormatError, match="YEAR/SPLIT"):
        voc_to_coco.convert(str(tmp_path), ["2007"])


@pytest.mark.parametrize("w,h,message", [
    ("1e400", "20", r"<width> is '1e400', not a finite number"),
    ("20", "nan", r"<height> is 'nan', not a finite number"),
    ("0", "20", r"<size><width> must be a whole number of pixels from 1 to 100000, got 0"),
    ("20.5", "20", r"<size><width> must be a whole number of pixels from 1 to 100000, got 20.5"),
])
def test_an_image_size_that_is_not_a_pixel_count_names_the_file(tmp_path, w, h, message):
    make_devkit(tmp_path, 2007, "test", {"000001": (20, 20, [("dog", 0, 1, 1, 5, 5)])})
    xml = tmp_path / "VOC2007" / "Annotations" / "000001.xml"
    xml.write_text(xml.read_text().replace("<width>20</width>", f"<width>{w}</width>")
                   .replace("<height>20</height>", f"<height>{h}</height>"))
    with pytest.raises(voc_to_coco.VOCFormatError, match=r"000001\.xml: " + message):
        voc_to_coco.convert(str(tmp_path), ["2007/test"])


@pytest.mark.parametrize("box", [(10, 1, 5, 5), (1, 10, 5, 5), (1, 1, "1e400", 5)])
def test_an_inverted_or_infinite_box_names_the_file_and_object(tmp_path, box):
    make_devkit(tmp_path, 2007, "test", {"000001": (20, 20, [("dog", 0, 1, 1, 5, 5), ("cat", 0, *box)])})
    with pytest.raises(voc_to_coco.VOCFormatError, match=r"000001\.xml: .*(object 2 \('cat'\) has an inverted box|"
                                                         r"<xmax> is '1e400', not a finite number)"):
        voc_to_coco.convert(str(tmp_path), ["2007/test"])


def test_a_one_pixel_box_is_not_inverted(tmp_path):
    make_devkit(tmp_path, 2007, "test", {"000001": (20, 20, [("dog", 0, 3, 3, 3, 3)])})
    coco = voc_to_coco.convert(str(tmp_path), ["2007/test"])
    assert coco["annotations"][0]["bbox"] == [2.0, 2.0, 1.0, 1.0]


def test_an_image_listed_twice_is_refused_naming_both_lists(tmp_path, capsys):
    make_devkit(tmp_path, 2007, "trainval", {"000005": (20, 20, [("dog", 0, 1, 1, 5, 5)])})
    lists = tmp_path / "VOC2007" / "ImageSets" / "Main"
    (lists / "val.txt").write_text("000005\n")
    out = tmp_path / "x.json"
    assert voc_to_coco.main([str(tmp_path), "--sets", "2007/trainval", "2007/val", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "image 000005 of VOC2007 is listed twice" in err and "trainval.txt" in err and "val.txt" in err
    (lists / "trainval.txt").write_text("000005\n000005\n")   # twice in one list
    with pytest.raises(voc_to_coco.VOCFormatError, match=r"000005 of VOC2007 is listed twice: in .*trainval\.txt and "
                                                         r".*trainval\.txt"):
        voc_to_coco.convert(str(tmp_path), ["2007/trainval"])
    assert not out.exists()
