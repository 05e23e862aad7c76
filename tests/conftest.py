import os
import sys

# The official conformance fixtures were recorded where MKL ran its AVX2 code path. On AVX-512
# machines MKL's default path rounds float32 log (the decoder's anchors, computed in float32 as
# the official code does) differently in the last bit, which moves float64 outputs by ~1e-8.
# Pin the path before torch loads MKL so the float64 comparisons are exact on every x86 CPU.
os.environ.setdefault("MKL_CBWR", "AVX2")

import pytest  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # tests/: helpers.py
from helpers import FIXTURES, ROOT, config_path  # noqa: E402

sys.path.insert(0, ROOT)
sys.path.insert(0, FIXTURES)

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def r18_cfg():
    import rtdetr_fine
    return rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), ["backbone.pretrained=null"])


@pytest.fixture(scope="session")
def custom_run(tmp_path_factory):
    """train.py, one step (8 images, batch 8), on a shapes set with category ids {3, 17, 90} and
    num_classes: auto; 128-px images, the model sees them at 96 px (so boxes are rescaled).
    -> {paths, out_dir, ckpt, overrides (for -u: data paths, sizes, num_classes=auto)}."""
    import contextlib
    import io

    from helpers import run_script, write_custom_id_set
    tmp = tmp_path_factory.mktemp("custom_ids")
    paths = write_custom_id_set(tmp / "set")
    out_dir = tmp / "run"
    overrides = ["demo.enabled=false", "num_classes=auto", "remap_mscoco_category=false",
                 f"train_dataloader.dataset.img_folder={paths['train_img_folder']}",
                 f"train_dataloader.dataset.ann_file={paths['train_ann_file']}",
                 f"val_dataloader.dataset.img_folder={paths['val_img_folder']}",
                 f"val_dataloader.dataset.ann_file={paths['val_ann_file']}",
                 "train_dataloader.image_size=96", "val_dataloader.image_size=96", "train_dataloader.batch_size=8",
                 "train_dataloader.num_workers=0", "val_dataloader.num_workers=0", "val_dataloader.batch_size=4",
                 "decoder.num_queries=30", "postprocessor.num_top_queries=30", "decoder.num_denoising=20"]
    with contextlib.redirect_stdout(io.StringIO()):
        code = run_script("train.py", ["-c", config_path("demo/rtdetr_r18_fine_shapes.yml"), "--device", "cpu",
                                       "-u", "epochs=1", f"output_dir={out_dir}", *overrides])
    assert code == 0
    return {"paths": paths, "out_dir": out_dir, "ckpt": out_dir / "last.pth", "overrides": overrides,
            "config": config_path("demo/rtdetr_r18_fine_shapes.yml")}
