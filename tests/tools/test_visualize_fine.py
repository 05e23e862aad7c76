"""tools/visualize_fine.py on a FINE checkpoint trained here: the maps are what the modules compute, one PNG."""
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import ROOT, config_path

sys.path.insert(0, os.path.join(ROOT, "tools"))
visualize_fine = pytest.importorskip("visualize_fine")


def first_val_image(custom_run):
    folder = custom_run["paths"]["val_img_folder"]
    return os.path.join(folder, sorted(os.listdir(folder))[0])


def test_writes_one_png_of_the_modules_maps(custom_run, tmp_path):
    out = tmp_path / "maps.png"
    args = visualize_fine.parse_args([first_val_image(custom_run), "-c", custom_run["config"], "-r",
                                      str(custom_run["ckpt"]), "-o", str(out), "-u", *custom_run["overrides"]])
    maps = visualize_fine.run(args, log=lambda *a: None)
    with Image.open(out) as png:
        assert png.size[0] > 800 and png.size[1] > 400
        assert len(np.unique(np.asarray(png.convert("RGB")).reshape(-1, 3), axis=0)) > 100          # a picture, not a blank canvas
    # the demo R18 + FINE at 96 px: two modules, refining the stride-16 (6x6) and stride-8 (12x12) maps
    assert [tuple(m["P"].shape) for m in maps] == [(256, 6, 6), (256, 12, 12)]
    for m in maps:
        assert m["A"].shape == m["P"].shape and m["modulated"].shape == m["P"].shape
        # the captured inputs reproduce the module's own output: the maps show what the model computed
        torch.testing.assert_close(m["modulated"], m["output"], rtol=1e-5, atol=1e-6)
        assert not torch.equal(m["modulated"], m["P"])


def test_selective_channels_and_gain():
    a = torch.zeros(4, 3, 3)
    a[2, 0, 0], a[1] = 5.0, torch.arange(9.0).reshape(3, 3)
    assert visualize_fine.selective_channels(a, 2) == [1, 2]
    p = torch.ones(2, 2, 2)
    gain = visualize_fine.gain(p, p * torch.tensor([2.0, 0.5]).view(2, 1, 1).expand(2, 2, 2) * 2)
    torch.testing.assert_close(gain, torch.full((2, 2), 1.321928), rtol=0, atol=1e-5)   # log2(2.5)


def test_config_without_fine_and_missing_image_are_clear_errors(custom_run, tmp_path, capsys):
    image = first_val_image(custom_run)
    ckpt = torch.load(custom_run["ckpt"], map_location="cpu", weights_only=True)
    ckpt["config"]["fine"]["enabled"] = False          # the config of a run without FINE
    ckpt["config"]["encoder"]["alignment"] = None      # (a resolved config says it twice)
    torch.save(ckpt, tmp_path / "no_fine.pth")
    assert visualize_fine.main([image, "-r", str(tmp_path / "no_fine.pth"), "-o", str(tmp_path / "x.png")]) == 1
    assert "fine.enabled is false" in capsys.readouterr().err
    cases = [([image, "-c", config_path("rtdetr_r18.yml")], "fine.enabled: True in the checkpoint's config, False"),
             ([str(tmp_path / "nope.png"), "-c", custom_run["config"], "-u", *custom_run["overrides"]],
              f"image not found: {tmp_path / 'nope.png'}")]
    for argv, message in cases:
        assert visualize_fine.main([*argv, "-r", str(custom_run["ckpt"]), "-o", str(tmp_path / "x.png")]) == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("flag,value,message", [("--channels", 100000, "--channels must be from 0 to 16, got 100000"),
                                                ("--channels", -1, "--channels must be from 0 to 16, got -1"),
                                                ("--dpi", 100000, "--dpi must be from 1 to 300, got 100000")])
def test_channels_and_dpi_are_bounded_before_any_work(tmp_path, capsys, flag, value, message):
    """Issue 25: --channels 100000 made a figure 260,000 inches wide (a hang); now refused at once."""
    import threading
    image, ckpt = tmp_path / "a.png", tmp_path / "ck.pth"
    Image.new("RGB", (8, 8)).save(image)
    ckpt.write_bytes(b"not read")
    codes = []
    worker = threading.Thread(daemon=True, target=lambda: codes.append(visualize_fine.main(
        [str(image), "-c", config_path("rtdetr_r18_fine.yml"), "-r", str(ckpt), "-o", str(tmp_path / "x.png"),
         flag, str(value)])))
    worker.start()
    worker.join(30)
    assert codes == [1], "visualize_fine did not refuse within 30 s"
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
