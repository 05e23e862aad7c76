"""PASCAL VOC (VOCdevkit layout, XML annotations) -> one COCO-format annotation file.

    python tools/voc_to_coco.py data/VOCdevkit --sets 2007/trainval 2012/trainval \\
        -o data/VOCdevkit/annotations/voc0712_trainval.json        # VOC07+12 trainval: 16,551 images
    python tools/voc_to_coco.py data/VOCdevkit --sets 2007/test \\
        -o data/VOCdevkit/annotations/voc07_test.json              # VOC07 test: 4,952 images

Reads VOC{year}/ImageSets/Main/{split}.txt and VOC{year}/Annotations/{id}.xml under the devkit root.
Image file names are relative to the root (VOC2007/JPEGImages/000005.jpg), so the root is the
config's img_folder. Categories: the 20 VOC classes in their usual order, ids 1..20. Boxes: VOC's
1-based inclusive pixel corners -> COCO [x, y, w, h] = [xmin - 1, ymin - 1, xmax - xmin + 1,
ymax - ymin + 1]. Objects marked difficult become iscrowd=1: COCO evaluation ignores detections on
them (as VOC's evaluation does) and rtdetr_fine's dataset leaves them out of the training targets.
"""
import argparse
import json
import math
import os
import sys
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from rtdetr_fine import cli  # noqa: E402

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")


MAX_IMAGE_SIDE = 100_000   # px: VOC images are ~500; a larger <size> is a corrupt file


class VOCFormatError(ValueError):
    pass


def _number(node, tag, path):
    child = node.find(tag)
    try:
        value = float(child.text)
    except (AttributeError, TypeError, ValueError):
        raise VOCFormatError(f"{path}: missing or non-numeric <{tag}>") from None
    if not math.isfinite(value):   # 1e400 reads as inf
        raise VOCFormatError(f"{path}: <{tag}> is {child.text.strip()!r}, not a finite number")
    return value


def _image_side(size, tag, path):
    value = _number(size, tag, path)
    if value != int(value) or not 1 <= value <= MAX_IMAGE_SIDE:
        raise VOCFormatError(f"{path}: <size><{tag}> must be a whole number of pixels from 1 to {MAX_IMAGE_SIDE}, "
                             f"got {value:g}")
    return int(value)


def read_annotation(path: str) -> tuple[int, int, list[dict]]:
    """One VOC XML file -> (width, height, [{"category_id", "bbox", "area", "iscrowd"}])."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise VOCFormatError(f"{path}: cannot read the annotation ({e})") from None
    size = root.find("size")
    if size is None:
        raise VOCFormatError(f"{path}: no <size>")
    width, height = _image_side(size, "width", path), _image_side(size, "height", path)
    objects = []
    for obj in root.findall("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_CLASSES:
            raise VOCFormatError(f"{path}: unknown class {name!r} (expected one of the 20 VOC classes)")
        box = obj.find("bndbox")
        if box is None:
            raise VOCFormatError(f"{path}: object {name!r} has no <bndbox>")
        x1, y1, x2, y2 = (_number(box, t, path) for t in ("xmin", "ymin", "xmax", "ymax"))
        if x2 < x1 or y2 < y1:   # VOC corners are inclusive: xmax == xmin is a box 1 px wide
            raise VOCFormatError(f"{path}: object {len(objects) + 1} ({name!r}) has an inverted box: xmin {x1:g}, "
                                 f"ymin {y1:g}, xmax {x2:g}, ymax {y2:g} (the max corner must not be left of or "
                                 "above the min corner)")
        w, h = x2 - x1 + 1, y2 - y1 + 1
        objects.append({"category_id": VOC_CLASSES.index(name) + 1, "bbox": [x1 - 1, y1 - 1, w, h],
                        "area": w * h, "iscrowd": int((obj.findtext("difficult") or "0").strip() == "1")})
    return width, height, objects


def convert(root: str, sets: list[str]) -> dict:
    """COCO dict for the image sets ("2007/trainval", ...) of the devkit at `root`."""
    images, annotations = [], []
    listed = {}   # file name -> the image set list that first listed it
    for item in sets:
        year, _, split = item.partition("/")
        if not split:
            raise VOCFormatError(f"--sets entry {item!r}: expected YEAR/SPLIT, e.g. 2007/trainval")
        folder = os.path.join(root, f"VOC{year}")
        list_file = os.path.join(folder, "ImageSets", "Main", f"{split}.txt")
        if not os.path.isfile(list_file):
            raise VOCFormatError(f"image set not found: {list_file}")
        with open(list_file) as f:
            ids = [line.split()[0] for line in f if line.strip()]
        for image_name in ids:
            file_name = f"VOC{year}/JPEGImages/{image_name}.jpg"
            if file_name in listed:
                raise VOCFormatError(f"image {image_name} of VOC{year} is listed twice: in {listed[file_name]} and "
                                     f"{list_file}; each image is converted once (check the --sets entries)")
            listed[file_name] = list_file
            width, height, objects = read_annotation(os.path.join(folder, "Annotations", f"{image_name}.xml"))
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": file_name,
                           "width": width, "height": height})
            for obj in objects:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, **obj})
    categories = [{"id": i + 1, "name": name, "supercategory": "voc"} for i, name in enumerate(VOC_CLASSES)]
    return {"info": {"description": f"PASCAL VOC {' + '.join(sets)}"}, "images": images,
            "annotations": annotations, "categories": categories}


def work(argv=None):
    """The command line's work; main() runs it behind the error boundary (rtdetr_fine/cli.py)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="VOCdevkit folder (holding VOC2007/, VOC2012/)")
    p.add_argument("--sets", nargs="+", required=True, metavar="YEAR/SPLIT", help="e.g. 2007/trainval 2012/trainval")
    p.add_argument("-o", "--output", required=True, help="COCO-format JSON to write")
    args = p.parse_args(argv)
    cli.check_output_file(args.output, "-o")   # before reading thousands of XML files
    cli.check_outputs_apart([("-o", args.output)], [  # what it reads; the output usually goes in ROOT/annotations/
        (f"--sets {item}", os.path.join(args.root, f"VOC{item.partition('/')[0]}", folder))
        for item in args.sets for folder in ("Annotations", "ImageSets", "JPEGImages")])
    coco = convert(args.root, args.sets)
    cli.write_text_atomic(args.output, json.dumps(coco))
    print(f"{args.output}: {len(coco['images'])} images, {len(coco['annotations'])} objects "
          f"({sum(a['iscrowd'] for a in coco['annotations'])} difficult -> iscrowd)")
    return 0


def main(argv=None) -> int:
    """Exit code 0 on success; a user error is one line on stderr and exit code 1."""
    return cli.run_main(work, argv, prog="voc_to_coco.py")


if __name__ == "__main__":
    sys.exit(main())
