"""Small COCO-format sets written to disk: a learnable shapes set and a hygiene test set."""
import hashlib
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# (name, RGB colour): one fixed shape and colour per class, category id = index + 1.
SHAPES = (
    ("circle", (225, 35, 35)),
    ("square", (35, 175, 55)),
    ("triangle", (40, 75, 230)),
    ("diamond", (240, 205, 25)),
    ("cross", (205, 45, 205)),
    ("hexagon", (25, 205, 215)),
)
GENERATOR_VERSION = 1
MANIFEST = "manifest.json"
MARKER = ".rtdetr_fine_demo"   # written first into a folder the generator makes: it may write there


def _write_atomic(path, data: bytes):
    tmp = Path(f"{path}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _json_bytes(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def shape_mask(kind, x0, y0, side, image_size):
    """Binary PIL "L" mask [image_size, image_size] of one shape in the square at (x0, y0, side)."""
    mask = Image.new("L", (image_size, image_size), 0)
    draw = ImageDraw.Draw(mask)
    x1, y1 = x0 + side - 1, y0 + side - 1
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if kind == "circle":
        draw.ellipse([x0, y0, x1, y1], fill=255)
    elif kind == "square":
        draw.rectangle([x0, y0, x1, y1], fill=255)
    elif kind == "triangle":
        draw.polygon([(x0, y1), (x1, y1), (cx, y0)], fill=255)
    elif kind == "diamond":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=255)
    elif kind == "cross":
        arm = side / 6
        draw.rectangle([x0, cy - arm, x1, cy + arm], fill=255)
        draw.rectangle([cx - arm, y0, cx + arm, y1], fill=255)
    elif kind == "hexagon":
        r = (side - 1) / 2
        draw.polygon([(cx + r * np.cos(a), cy + r * np.sin(a)) for a in np.arange(6) * np.pi / 3], fill=255)
    else:
        raise ValueError(f"unknown shape {kind!r}")
    return mask


def _background(rng, size):
    """Low-saturation grey with a soft gradient, float32 [size, size, 3]."""
    grey = rng.uniform(70, 180) + rng.uniform(-12, 12, size=3)
    ramp = np.linspace(-1, 1, size, dtype=np.float32)
    gx, gy = rng.uniform(-20, 20, size=2)
    return (grey[None, None, :] + gx * ramp[None, :, None] + gy * ramp[:, None, None]).astype(np.float32)


def render_shapes_image(rng, image_size, num_classes, num_objects):
    """One image: uint8 [S, S, 3] and a list of (category_id, [x, y, w, h], area).

    Shapes do not overlap, so every box is the tight bound of the visible pixels.
    """
    lo, hi = max(4, round(image_size * 30 / 320)), max(5, round(image_size * 140 / 320))
    pixels = _background(rng, image_size)
    taken, objects = [], []
    for _ in range(num_objects):
        for _attempt in range(50):
            side = int(rng.integers(lo, hi + 1))
            x0, y0 = (int(v) for v in rng.integers(0, image_size - side + 1, size=2))
            if all(x0 + side + 2 <= a or a + s + 2 <= x0 or y0 + side + 2 <= b or b + s + 2 <= y0
                   for a, b, s in taken):
                break
        else:
            continue                                   # no free spot: fewer objects
        taken.append((x0, y0, side))
        category = int(rng.integers(num_classes))
        name, colour = SHAPES[category]
        mask = np.asarray(shape_mask(name, x0, y0, side, image_size)) > 0
        jitter = rng.uniform(-12, 12, size=3)
        pixels[mask] = np.asarray(colour, dtype=np.float32) + jitter
        ys, xs = np.nonzero(mask)
        box = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        objects.append((category + 1, box, int(mask.sum())))
    pixels += rng.normal(0, 8, size=pixels.shape)
    return np.clip(pixels + 0.5, 0, 255).astype(np.uint8), objects


def _shapes_split(folder, num_images, image_size, num_classes, seed, split_id):
    """Write one split's images into `folder`; returns its COCO dict."""
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        rng = np.random.default_rng([seed, split_id, i])
        num_objects = 0 if i % 10 == 3 else int(rng.integers(1, 5))   # every 10th image is empty
        pixels, objects = render_shapes_image(rng, image_size, num_classes, num_objects)
        file_name = f"{i:06d}.jpg"
        Image.fromarray(pixels).save(folder / file_name, quality=92, subsampling=0)
        images.append({"id": i + 1, "file_name": file_name, "width": image_size, "height": image_size})
        for category_id, box, area in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": category_id,
                                "bbox": box, "area": area, "iscrowd": 0})
    categories = [{"id": k + 1, "name": SHAPES[k][0], "supercategory": "shape"} for k in range(num_classes)]
    return {"info": {"description": "synthetic coloured shapes"}, "licenses": [],
            "images": images, "annotations": annotations, "categories": categories}


def make_shapes_dataset(root, num_train=200, num_val=50, image_size=320, num_classes=3, seed=0):
    """Deterministic COCO-format set of coloured shapes under `root`, cached.

    Layout: root/{train,val}/NNNNNN.jpg, root/annotations/instances_{train,val}.json,
    root/manifest.json (written last: a set without a matching manifest is regenerated).
    Writes only into a folder it made (its marker file, or a manifest of an earlier version) or an empty
    one: any other folder is refused (ValueError naming it), so a user's files are never overwritten.
    Returns {"root", "train_img_folder", "train_ann_file", "val_img_folder", "val_ann_file"}.
    """
    if not 1 <= num_classes <= len(SHAPES):
        raise ValueError(f"num_classes must be in 1..{len(SHAPES)} for the shapes set, got {num_classes}")
    root = Path(root)
    paths = {"root": str(root)}
    counts = {"train": num_train, "val": num_val}
    for split in counts:
        paths[f"{split}_img_folder"] = str(root / split)
        paths[f"{split}_ann_file"] = str(root / "annotations" / f"instances_{split}.json")
    params = {"num_train": num_train, "num_val": num_val, "image_size": image_size,
              "num_classes": num_classes, "seed": seed, "version": GENERATOR_VERSION}
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
    manifest = root / MANIFEST

    if _is_complete(manifest, digest, paths, counts):
        return paths
    claim_folder(root)
    manifest.unlink(missing_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split_id, (split, n) in enumerate(counts.items()):
        coco = _shapes_split(Path(paths[f"{split}_img_folder"]), n, image_size, num_classes, seed, split_id)
        _write_atomic(paths[f"{split}_ann_file"], _json_bytes(coco))
    _write_atomic(manifest, _json_bytes({"params": params, "hash": digest}))
    return paths


def claim_folder(root: Path) -> None:
    """Make `root` the generator's (creating it with its marker file) if it is new or empty; accept it if
    the generator made it; else a ValueError naming the folder and some of what it holds."""
    if (root / MARKER).is_file() or _is_manifest(root / MANIFEST):
        return
    if root.exists() and not root.is_dir():
        raise ValueError(f"demo.root {root} is a file, not a folder: give demo.root a new or empty folder")
    held = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    if held:
        shown = ", ".join(held[:5]) + (", ..." if len(held) > 5 else "")
        raise ValueError(f"demo.root {root} is a folder the demo generator did not make (it holds {shown}; no "
                         f"{MARKER} marker): not writing the demo set into it; give demo.root a new or empty folder")
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("made by rtdetr_fine's demo generator (rtdetr_fine/data/synthetic.py): it may "
                               "rewrite the files of this folder\n")


def _is_manifest(path: Path) -> bool:
    try:
        return set(json.loads(path.read_text())) == {"params", "hash"}
    except (OSError, ValueError, TypeError):
        return False


def _is_complete(manifest, digest, paths, counts):
    try:
        if json.loads(manifest.read_text()).get("hash") != digest:
            return False
    except (OSError, ValueError, AttributeError):
        return False
    for split, n in counts.items():
        if not os.path.isfile(paths[f"{split}_ann_file"]):
            return False
        folder = Path(paths[f"{split}_img_folder"])
        if not all((folder / f"{i:06d}.jpg").is_file() for i in range(n)):
            return False
    return True


def _solid(size, colour, mode="RGB", patch=None, patch_colour=None):
    image = Image.new(mode, size, colour)
    if patch is not None:
        x, y, w, h = patch
        ImageDraw.Draw(image).rectangle([x, y, x + w - 1, y + h - 1], fill=patch_colour)
    return image


def make_hygiene_dataset(root):
    """Tiny COCO-format set with the cases a real set throws at a loader (for tests).

    Returns {"img_folder", "ann_file", "expected"}; expected holds the hygiene counts,
    every image's annotated (w, h) and, for the EXIF images, the red patch's box.
    Category ids are 3 and 7 (labels 0 and 1 without remapping).
    """
    root = Path(root)
    img_folder = root / "images"
    img_folder.mkdir(parents=True, exist_ok=True)
    red, grey = (230, 20, 20), (90, 90, 90)
    images, anns = [], []

    def add_image(name, image, boxes, save_kwargs=None, size=None):
        image.save(img_folder / name, **(save_kwargs or {}))
        w, h = size or image.size
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
        for bbox, category_id, iscrowd in boxes:
            anns.append({"id": 100 + len(anns) + 1, "image_id": image_id, "category_id": category_id,
                         "bbox": bbox, "area": float(abs(bbox[2] * bbox[3])), "iscrowd": iscrowd})

    add_image("boxes.jpg", _solid((64, 48), grey), [
        ([4, 4, 20, 16], 3, 0),           # kept as is
        ([10, 10, 0, 5], 3, 0),           # zero width: dropped
        ([10, 10, 5, -3], 7, 0),          # negative height: dropped
        ([50, 20, 30, 10], 7, 0),         # past the right border: clipped to x2 = 64
        ([-5, -5, 15, 15], 3, 0),         # past the top-left corner: clipped to (0, 0)
        ([70, 10, 10, 10], 3, 0),         # wholly outside: dropped
        ([0, 0, 30, 30], 7, 1),           # crowd: not a training target
    ])
    add_image("gray.jpg", _solid((40, 30), 128, "L"), [([2, 3, 10, 10], 3, 0)])
    rgba = _solid((36, 28), (10, 200, 10, 255), "RGBA")
    ImageDraw.Draw(rgba).rectangle([0, 0, 9, 9], fill=(200, 10, 10, 0))
    add_image("rgba.png", rgba, [([1, 1, 8, 8], 7, 0)])
    palette = _solid((32, 32), (0, 0, 200)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    add_image("palette.png", palette, [([5, 5, 10, 10], 3, 0)], {"transparency": 0})
    add_image("cmyk.jpg", _solid((30, 20), (0, 0, 0, 0), "CMYK"), [([0, 0, 30, 20], 3, 0)])

    # EXIF orientation: the JSON describes the displayed (transposed) image; the file
    # stores pixels that must be rotated for display.
    patches = {}
    for name, orientation, undo in (("exif6.jpg", 6, Image.Transpose.ROTATE_90),
                                    ("exif8.jpg", 8, Image.Transpose.ROTATE_270)):
        patch = [5, 32, 14, 20]
        shown = _solid((40, 60), grey, patch=patch, patch_colour=red)
        exif = Image.Exif()
        exif[0x0112] = orientation
        add_image(name, shown.transpose(undo), [(patch, 3, 0)], {"exif": exif.tobytes(), "quality": 95},
                  size=shown.size)
        patches[name] = patch
    add_image("empty.jpg", _solid((50, 50), grey), [])

    ann_file = root / "annotations.json"
    categories = [{"id": 3, "name": "three"}, {"id": 7, "name": "seven"}]
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    expected = {
        "stats": {"dropped": 3, "degenerate": 2, "outside": 1, "clipped": 2, "crowd": 1,
                  "boxes": 9, "empty_images": 1},
        "sizes": {img["file_name"]: (img["width"], img["height"]) for img in images},
        "exif_patches": patches,
        "exif_patch_colour": red,
    }
    return {"img_folder": str(img_folder), "ann_file": str(ann_file), "expected": expected}
