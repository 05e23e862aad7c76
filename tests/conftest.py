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
