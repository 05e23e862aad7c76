"""Image decoding for detection sets: RGB always, EXIF orientation optional, size checked."""
import logging
import os

import numpy as np
from PIL import Image, ImageOps

logger = logging.getLogger(__name__)


def to_rgb(image, where="the image"):
    """Convert a PIL image of any mode (L, LA, P, RGBA, CMYK, I;16, I, F, ...) to RGB.

    Alpha is dropped (the colour channels are kept as stored), palette images with a
    transparency entry go through RGBA first. Greyscale of more than 8 bits is scaled to 8 bits,
    never clipped (PIL's own conversion clips at 255): 16-bit ("I;16", and "I" whose values fit
    16 bits) by 255 / 65535; 32-bit float ("F") from [0, 1] by 255, or as it is when its values
    lie in [0, 255]. Other values have no standard 8-bit reading: a ValueError naming `where`.
    """
    if image.mode == "RGB":
        return image
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode.startswith("I;16"):
        pixels = np.asarray(image, dtype=np.float32) / 257.0
        image = Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("I", "F"):
        image = Image.fromarray(_wide_grey_to_8bit(np.asarray(image), image.mode, where), mode="L")
    return image.convert("RGB")


def _wide_grey_to_8bit(pixels, mode, where):
    """32-bit integer / float greyscale -> uint8 by the scaling to_rgb describes."""
    if mode == "F" and not np.isfinite(pixels).all():
        raise ValueError(f"image {where}: 32-bit float pixels include NaN or inf; there is no 8-bit reading of them")
    low, high = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
    if mode == "I" and 0 <= low and high <= 65535:
        scale = 255.0 / 65535.0
    elif mode == "F" and 0 <= low and high <= 1.0:
        scale = 255.0
    elif mode == "F" and 0 <= low and high <= 255.0:
        scale = 1.0
    else:
        kind = "32-bit integer" if mode == "I" else "32-bit float"
        expected = "0..65535 (16-bit data)" if mode == "I" else "[0, 1] or [0, 255]"
        raise ValueError(f"image {where}: {kind} pixels ({mode!r} mode) range over [{low:g}, {high:g}], outside "
                         f"{expected}; there is no standard 8-bit reading of them, and clipping would lose "
                         "what lies outside: convert the image to 8-bit (or 16-bit) first")
    return np.clip(pixels.astype(np.float64) * scale + 0.5, 0, 255).astype(np.uint8)


def load_rgb_image(path, image_id=None, expected_size=None, exif_transpose=True):
    """Decode `path` as an RGB PIL image whose size is `expected_size` = (w, h).

    With `exif_transpose` the EXIF orientation tag is applied (the image as viewers
    display it). The annotation file's width/height decide which pixels the boxes
    refer to: if the displayed size disagrees with them but the stored (un-rotated)
    size matches, the annotations were made on the stored pixels (tools that ignore
    EXIF, e.g. the original COCO annotation) and the stored pixels are returned.
    Returns (image, orientation_ignored: bool).
    Raises FileNotFoundError (missing), OSError (undecodable), ValueError (size).
    """
    where = f"{path}" + (f" (image_id {image_id})" if image_id is not None else "")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {where}")
    try:
        with Image.open(path) as raw:
            raw.load()       # decoded: the pixels stay when the file closes, no copy needed
        shown = ImageOps.exif_transpose(raw) if exif_transpose else raw
        stored = raw if shown.size != raw.size else None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise OSError(f"cannot decode image {where}: {e}") from e

    if expected_size is None or tuple(shown.size) == tuple(expected_size):
        return to_rgb(shown, where), False
    if stored is not None and tuple(stored.size) == tuple(expected_size):
        return to_rgb(stored, where), True
    hint = ""
    if not exif_transpose and tuple(shown.size[::-1]) == tuple(expected_size) and _has_rotation(raw):
        hint = (" (its EXIF orientation rotates it to the annotated size: set "
                "*_dataloader.dataset.exif_transpose: true for data annotated on the displayed images)")
    raise ValueError(
        f"image {where} decodes to width x height {shown.size[0]} x {shown.size[1]}"
        + (" after EXIF orientation" if exif_transpose else "")
        + f", but the annotation file says {expected_size[0]} x {expected_size[1]}" + hint
    )


def _has_rotation(image):
    """EXIF orientation 5-8: the displayed image is the stored one transposed."""
    return image.getexif().get(0x0112, 1) in (5, 6, 7, 8)
