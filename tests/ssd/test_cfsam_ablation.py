"""The CFSAM paper's ablation rows as configs (Sec. 4.4: Table 5 components, Table 6 maps) on SSD300."""
import pytest
import torch
from helpers import config_path

import rtdetr_fine
from rtdetr_fine.config import ConfigError
from rtdetr_fine.evaluation.flops import count_params
from rtdetr_fine.modules.cfsam import CFSAM, OnMaps

ROWS = {"base": "ssd300.yml", "lfe": "ablation/ssd300_cfsam_lfe.yml", "lfe_gfe": "ablation/ssd300_cfsam_lfe_gfe.yml",
        "full": "ssd300_cfsam.yml", "shallow": "ablation/ssd300_cfsam_shallow.yml",
        "deep": "ablation/ssd300_cfsam_deep.yml"}


@pytest.fixture(scope="module")
def models():
    """Each row's model (VOC: 20 classes; no ImageNet download), built from its config."""
    out = {}
    for row, name in ROWS.items():
        cfg = rtdetr_fine.load_config(config_path(name), ["backbone.pretrained=null"])
        torch.manual_seed(0)
        out[row] = (cfg, rtdetr_fine.build_model(cfg).eval())
    return out


def test_the_rows_are_voc_configs_of_the_papers_recipe(models):
    for row, (cfg, _) in models.items():
        assert cfg["evaluator"]["metric"] == "voc07" and cfg["ssd"]["fc_init"] == "reduced_vgg16", row
        assert cfg["epochs"] == 260 and cfg["optimizer"]["lr_milestones"] == [130, 220], row
    assert {row: (cfg["cfsam"]["components"], cfg["cfsam"]["maps"]) for row, (cfg, _) in models.items()
            if row != "base"} == {"lfe": ("lfe", None), "lfe_gfe": ("lfe_gfe", None), "full": ("full", None),
                                  "shallow": ("full", [0, 1, 2]), "deep": ("full", [3, 4, 5])}


def test_parameters_grow_with_each_component_and_subsets_lie_between(models):
    params = {row: count_params(model) for row, (_, model) in models.items()}
    assert params["base"] < params["lfe"] < params["lfe_gfe"] < params["full"]
    assert params["base"] < params["deep"] < params["full"] and params["base"] < params["shallow"] < params["full"]
    assert params["base"] == 26_285_486 and params["full"] == 45_375_918    # Table 4's rows, as before the keys


def test_every_row_runs_a_forward_pass_with_the_heads_format(models):
    images = torch.rand(1, 3, 300, 300)
    for row, (_, model) in models.items():
        with torch.no_grad():
            outputs = model(images)
        assert {k: tuple(v.shape) for k, v in outputs.items()} == {
            "cls_logits": (1, 8732, 21), "bbox_regression": (1, 8732, 4), "anchors": (8732, 4)}, row
        assert all(torch.isfinite(v).all() for v in outputs.values()), row


def test_the_maps_rows_refine_their_maps_and_pass_the_others(models):
    seen = {}
    for row in ("shallow", "deep"):
        model = models[row][1]
        assert isinstance(model.cross_layer, OnMaps) and isinstance(model.cross_layer.module, CFSAM)
        feats = list(model.backbone(torch.rand(1, 3, 300, 300)).values())
        with torch.no_grad():
            out = model.cross_layer(feats)
        seen[row] = [i for i, (f, o) in enumerate(zip(feats, out)) if o is not f]
    assert seen == {"shallow": [0, 1, 2], "deep": [3, 4, 5]}
    assert models["shallow"][1].cross_layer.module.in_channels == [512, 1024, 512]
    assert models["deep"][1].cross_layer.module.in_channels == [256, 256, 256]
    plain = set(models["base"][1].state_dict())
    for row in ("lfe", "lfe_gfe", "full", "shallow", "deep"):        # the SSD300 part keeps torchvision's names
        extra = set(models[row][1].state_dict()) - plain
        assert plain < set(models[row][1].state_dict()) and all(k.startswith("cross_layer.") for k in extra), row


@pytest.mark.parametrize("overrides, said", [
    (["cfsam.components=gfe"], "cfsam.components must be one of ('lfe', 'lfe_gfe', 'full')"),
    (["cfsam.maps=[0, 6]"], "cfsam.maps must be null (every map) or a list of increasing indices 0..5"),
    (["cfsam.maps=[2, 1]"], "cfsam.maps must be null"),
    (["cfsam.maps=[]"], "cfsam.maps must be null"),
    (["cfsam.maps=3"], "cfsam.maps must be null"),
    (["ssd.fc_init=imagenet"], "ssd.fc_init must be one of ('reduced_vgg16', 'random')"),
    (["evaluator.metric=voc12"], "evaluator.metric must be one of ('coco', 'voc07', 'voc')"),
])
def test_bad_ablation_keys_are_named(overrides, said):
    with pytest.raises(ConfigError, match=r"ssd300_cfsam\.yml|override") as e:
        rtdetr_fine.load_config(config_path("ssd300_cfsam.yml"), overrides)
    assert said in str(e.value)


def test_rtdetr_maps_are_checked_against_its_three_maps():
    cfg = rtdetr_fine.load_config(config_path("rtdetr_r18_cfsam.yml"), ["cfsam.maps=[1, 2]", "backbone.pretrained=null",
                                                                        "num_classes=3"])
    assert isinstance(rtdetr_fine.build_model(cfg).cross_layer, OnMaps)
    with pytest.raises(ConfigError, match=r"indices 0\.\.2 of the maps of decoder.feat_channels"):
        rtdetr_fine.load_config(config_path("rtdetr_r18_cfsam.yml"), ["cfsam.maps=[3]"])
