import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
sys.path.insert(0, ROOT)
sys.path.insert(0, FIXTURES)

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def config_path(name):
    return os.path.join(ROOT, "configs", name)


@pytest.fixture
def r18_cfg():
    import rtdetr_fine
    return rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), ["backbone.pretrained=null"])
