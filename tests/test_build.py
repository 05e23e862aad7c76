"""build.py: the detector family and the cross-layer module are chosen from the config."""
import pytest
import torch
from helpers import config_path

import rtdetr_fine
from rtdetr_fine.modules.cfsam import CFSAM
from rtdetr_fine.rtdetr.criterion import SetCriterion
from rtdetr_fine.rtdetr.postprocessor import PostProcessor
from rtdetr_fine.rtdetr.model import RTDETR
from rtdetr_fine.ssd import SSD300, SSDCriterion, SSDPostProcessor

SMALL = ["backbone.pretrained=null", "num_classes=3", "decoder.num_queries=30", "postprocessor.num_top_queries=30",
         "decoder.num_denoising=10"]


def build(name, *overrides):
    small = SMALL[:2] if "ssd300" in name else SMALL   # SSD300 configs refuse RT-DETR-only keys
    cfg = rtdetr_fine.load_config(config_path(name), [*small, *overrides])
    torch.manual_seed(0)
    return cfg, rtdetr_fine.build_model(cfg)


def test_cross_layer_off_leaves_the_rtdetr_state_dict_as_the_baseline():
    _, baseline = build("rtdetr_r18.yml")
    assert baseline.cross_layer is None
    assert not any(k.startswith("cross_layer.") for k in baseline.state_dict())


def test_rtdetr_with_cfsam_adds_only_cross_layer_weights_and_keeps_the_output_format():
    _, baseline = build("rtdetr_r18.yml")
    cfg, model = build("rtdetr_r18_cfsam.yml")
    assert isinstance(model, RTDETR) and isinstance(model.cross_layer, CFSAM)
    assert model.cross_layer.in_channels == [256, 256, 256]
    base_keys, keys = list(baseline.state_dict()), list(model.state_dict())
    assert keys[:len(base_keys)] == base_keys                      # baseline order first: official weights fit
    assert all(k.startswith("cross_layer.") for k in keys[len(base_keys):])
    images = torch.rand(2, 3, 96, 96)                              # 144 + 36 + 9 = 189 tokens: the resize path
    with torch.no_grad():
        a, b = baseline.eval()(images), model.eval()(images)
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    seen = []
    model.decoder.register_forward_pre_hook(lambda m, args: seen.append([tuple(x.shape) for x in args[0]]))
    model.cross_layer.register_forward_hook(lambda m, args, out: seen.append("cfsam"))
    with torch.no_grad():
        model(images)
    assert seen == ["cfsam", [(2, 256, 12, 12), (2, 256, 6, 6), (2, 256, 3, 3)]]   # between encoder and decoder


def test_rtdetr_with_cfsam_trains():
    cfg, model = build("rtdetr_r18_cfsam.yml")
    criterion = rtdetr_fine.build_criterion(cfg)
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.3, 0.3]])}] * 2
    losses = criterion(model.train()(torch.rand(2, 3, 64, 64), targets), targets)
    sum(losses.values()).backward()
    grads = [p.grad for p in model.cross_layer.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name, model_type, criterion_type, post_type", [
    ("rtdetr_r18.yml", RTDETR, SetCriterion, PostProcessor),
    ("ssd300.yml", SSD300, SSDCriterion, SSDPostProcessor),
])
def test_detector_key_picks_the_family(name, model_type, criterion_type, post_type):
    cfg, model = build(name)
    assert isinstance(model, model_type)
    assert isinstance(rtdetr_fine.build_criterion(cfg), criterion_type)
    post = rtdetr_fine.build_postprocessor(cfg)
    assert isinstance(post, post_type)
    assert (post.label_to_category is not None) == cfg["remap_mscoco_category"]
    assert model.deploy() is model and not model.training


def test_ssd300_has_num_classes_plus_background_outputs():
    _, model = build("ssd300.yml")
    assert model.head.classification_head.num_columns == 4
    assert model.cross_layer is None
