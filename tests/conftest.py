import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # tests/: helpers.py
from helpers import FIXTURES, ROOT, config_path  # noqa: E402

sys.path.insert(0, ROOT)
sys.path.insert(0, FIXTURES)

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def r18_cfg():
    import rtdetr_fine
    return rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), ["backbone.pretrained=null"])
