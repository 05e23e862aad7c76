"""The any-depth authors' layout (layouts/anydepth_authors.py): their names map onto ours, and their whole
any-depth R50, loaded from a checkpoint in their layout, computes what theirs computes at every recorded
depth (fixtures ../shared/conformance/anydepth_r50_seed*.pt: every such file is checked, so a fixture of
other seeds and depths is checked the same way)."""
import glob
import os

import pytest
import torch
from fill_weights import fill, read_keys
from helpers import CONFORMANCE, config_path

import rtdetr_fine
from rtdetr_fine.anydepth import describe_depth, set_depth
from rtdetr_fine.checkpoint import canonical_names, load_weights
from rtdetr_fine.evaluation.flops import count_params
from rtdetr_fine.layouts import anydepth_authors, to_our_layout

FIXTURES = sorted(glob.glob(os.path.join(CONFORMANCE, "anydepth_r50_seed*.pt")))
KEYS = os.path.join(CONFORMANCE, "anydepth_r50_keys.tsv")


def test_their_names_map_onto_ours():
    t = torch.zeros(1)
    theirs = ["backbone.layer3.1.bn2_skip.running_var", "encoder.input_proj.2.conv.weight",
              "encoder.input_proj.0.norm.bias", "encoder.input_proj.1.norm_skippable.weight",
              "encoder.encoder.0.layers.0.norm2_skippable.bias",
              "encoder.pan_blocks.1.bottlenecks.0.conv2.norm_skippable.running_mean", "encoder.lateral_convs.0.norm.weight", "decoder.input_proj.0.conv.weight", "backbone.layer2.0.downsample.1.weight"]
    ours = ["backbone.layer3.1.bn2.skip.running_var", "encoder.input_proj.2.0.weight", "encoder.input_proj.0.1.bias",
            "encoder.input_proj.1.1.skip.weight", "encoder.encoder.0.layers.0.norm2.skip.bias",
            "encoder.pan_blocks.1.bottlenecks.0.conv2.norm.skip.running_mean", "encoder.lateral_convs.0.norm.weight",
            "decoder.input_proj.0.conv.weight", "backbone.layer2.0.downsample.1.weight"]   # the official names stay
    assert to_our_layout({k: t for k in theirs})[1] == anydepth_authors.NAME
    assert list(canonical_names({f"module.{k}": t for k in theirs})) == ours          # a DDP save of theirs too
    assert anydepth_authors.our_name("layer1.0.bn3_skip.weight") == "layer1.0.bn3.skip.weight"   # ImageNet files


def test_official_and_our_names_match_no_foreign_layout():
    official = read_keys(os.path.join(CONFORMANCE, "rtdetr_r50vd_keys.tsv"))   # decoder.input_proj.i.conv: official
    assert not anydepth_authors.matches(official) and to_our_layout(official)[1] is None
    cfg = rtdetr_fine.load_config(config_path("rtdetr_r50_adn_6x.yml"), ["backbone.pretrained=null"])
    ours = rtdetr_fine.build_model(cfg).state_dict()
    assert not anydepth_authors.matches(ours)


def test_their_state_dict_is_ours_under_the_mapping_and_the_parameter_count_theirs():
    """953 entries in their layout, every one with a place of the same shape in the model of
    configs/rtdetr_r50_adn_6x.yml, and nothing of ours left out; 42,885,068 nn.Parameters as theirs."""
    theirs = read_keys(KEYS)
    cfg = rtdetr_fine.load_config(config_path("rtdetr_r50_adn_6x.yml"), ["backbone.pretrained=null"])
    model = rtdetr_fine.build_model(cfg)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    mapped = {anydepth_authors.our_name(k): v for k, v in theirs.items()}
    assert len(theirs) == len(mapped) == len(own) == 953 and mapped == own
    assert count_params(model) == 42_885_068


@pytest.fixture(scope="module", params=FIXTURES, ids=os.path.basename)
def recorded(request, tmp_path_factory):
    """(fixture, model of configs/rtdetr_r50_adn_6x.yml in float64 eval, with the fixture's weights written
    in the authors' layout and loaded through load_weights)."""
    fx = torch.load(request.param, weights_only=False)
    cfg = rtdetr_fine.load_config(config_path("rtdetr_r50_adn_6x.yml"), ["backbone.pretrained=null"])
    model = rtdetr_fine.build_model(cfg).double().eval()
    state = fill(read_keys(os.path.join(CONFORMANCE, fx["keys"])), fx["seed"])
    path = tmp_path_factory.mktemp("anydepth_authors") / "authors_layout.pth"
    torch.save({"ema": {"module": state}}, path)
    logged = []
    assert load_weights(model, str(path), log=logged.append) == "ema"     # strict: every name maps
    assert logged == []
    return fx, model


def test_fixtures_are_there():
    assert FIXTURES, f"no anydepth_r50_seed*.pt in {CONFORMANCE}"


def test_every_depth_matches_the_authors_model(recorded):
    """Measured on the seed-0 file: max |diff| about 1e-14 (logits) and 2e-15 (boxes) at each of its five
    depths, whose outputs differ from each other by more than 1. Tolerance 1e-6 as the issue's acceptance
    (float32 position embedding and anchors, as in the official model, can move the last digits)."""
    fx, model = recorded
    images = fx["images_uint8"].double() / 255
    for case in fx["depths"]:
        depth = set_depth(model, case["spec"])
        kwargs = case["authors_kwargs"]      # the spec means what their forward was given
        assert (list(depth.backbone), [depth.neck], depth.decoder) == \
            (list(kwargs["backbone_skip"]), list(kwargs["encoder_skip"]), kwargs["decoder_depth"])
        with torch.no_grad():
            out = model(images)
        where = describe_depth(depth, model.anydepth)
        torch.testing.assert_close(out["pred_logits"], case["pred_logits"], rtol=0, atol=1e-6, msg=where)
        torch.testing.assert_close(out["pred_boxes"], case["pred_boxes"], rtol=0, atol=1e-6, msg=where)
    set_depth(model, "full")
