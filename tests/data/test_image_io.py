"""Image modes wider than 8 bits (issue 25): scaled to 8 bits, never clipped; values without a standard 8-bit
reading refused naming the file (and the image id)."""
import numpy as np
import pytest
from PIL import Image

from rtdetr_fine.data.image_io import load_rgb_image


def save(tmp_path, pixels, mode, name="im.tif"):
    path = tmp_path / name
    Image.fromarray(pixels, mode=mode).save(path)
    return str(path)


def grey(image):
    rgb = np.asarray(image)
    assert image.mode == "RGB" and (rgb[..., 0] == rgb[..., 1]).all()
    return rgb[..., 0].astype(int)


def test_float_tiff_in_0_1_is_scaled_not_clipped(tmp_path):
    pixels = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    image, _ = load_rgb_image(save(tmp_path, pixels, "F"))
    assert np.abs(grey(image) - np.round(pixels * 255)).max() <= 1
    assert len(np.unique(grey(image))) == 64        # before: 0 and 1 only, after clipping 0..1 to bytes


def test_float_tiff_in_0_255_keeps_its_values(tmp_path):
    pixels = np.linspace(0, 255, 64, dtype=np.float32).reshape(8, 8)
    image, _ = load_rgb_image(save(tmp_path, pixels, "F"))
    assert np.abs(grey(image) - pixels).max() <= 0.5 + 1e-6


def test_32_bit_integer_tiff_of_16_bit_data_is_scaled(tmp_path):
    pixels = (np.arange(64, dtype=np.int32) * 1000).reshape(8, 8)    # up to 63000: 16-bit data
    image, _ = load_rgb_image(save(tmp_path, pixels, "I"))
    assert np.abs(grey(image) - np.round(pixels * 255 / 65535)).max() <= 1
    assert grey(image).max() == 245                  # 63000 -> 245, not clipped to 255


def test_16_bit_png_is_scaled(tmp_path):
    pixels = (np.arange(64, dtype=np.uint16) * 1000).reshape(8, 8)
    path = tmp_path / "im16.png"
    Image.fromarray(pixels).save(path)
    image, _ = load_rgb_image(str(path))
    assert grey(image).max() == 245


@pytest.mark.parametrize("pixels,mode,message", [
    ((np.arange(64, dtype=np.int32) * 10**6).reshape(8, 8), "I", r"32-bit integer pixels \('I' mode\) range over "
                                                                  r"\[0, 6\.3e\+07\], outside 0\.\.65535"),
    (np.full((8, 8), -5, dtype=np.int32), "I", r".*range over \[-5, -5\]"),
    (np.linspace(0, 1000, 64, dtype=np.float32).reshape(8, 8), "F", r"32-bit float pixels .* outside \[0, 1\] or "
                                                                      r"\[0, 255\]"),
    (np.full((8, 8), np.nan, dtype=np.float32), "F", r"32-bit float pixels include NaN or inf"),
])
def test_wide_values_without_an_8_bit_reading_name_the_file_and_id(tmp_path, pixels, mode, message):
    path = save(tmp_path, pixels, mode, "wide.tif")
    with pytest.raises(ValueError, match=rf"image .*wide\.tif \(image_id 7\): {message}"):
        load_rgb_image(path, image_id=7, expected_size=(8, 8))
