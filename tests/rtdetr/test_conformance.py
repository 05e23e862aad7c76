"""The baseline computes what the official RT-DETR computes (fixtures from ../shared/conformance)."""
import os

import pytest
import torch
from helpers import FIXTURES, config_path
from fill_weights import fill, read_keys

import rtdetr_fine


def _model(name):
    cfg = rtdetr_fine.load_config(config_path(f"rtdetr_{name}.yml"), ["backbone.pretrained=null"])
    return cfg, rtdetr_fine.build_model(cfg)


@pytest.mark.parametrize("name,tsv,params", [
    ("r18", "rtdetr_r18vd_keys.tsv", 20_184_464),
    ("r50", "rtdetr_r50vd_keys.tsv", 42_891_372),
])
def test_param_count_and_state_dict_names_match_official(name, tsv, params):
    _, model = _model(name)
    assert sum(p.numel() for p in model.parameters()) == params
    ours = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    official = list(read_keys(os.path.join(FIXTURES, tsv)).items())
    assert ours == official   # same names, shapes and order


@pytest.fixture(scope="module")
def r18_official_run():
    cfg, model = _model("r18")
    model = model.double().eval()
    model.load_state_dict(fill(read_keys(os.path.join(FIXTURES, "rtdetr_r18vd_keys.tsv")), seed=0))
    fx = torch.load(os.path.join(FIXTURES, "rtdetr_r18vd_seed0.pt"), weights_only=False)
    with torch.no_grad():
        out = model(fx["images_uint8"].double() / 255)
    return cfg, model, fx, out


def test_r18_outputs_match_official(r18_official_run):
    _, _, fx, out = r18_official_run
    torch.testing.assert_close(out["pred_logits"], fx["pred_logits"], rtol=0, atol=1e-6)
    torch.testing.assert_close(out["pred_boxes"], fx["pred_boxes"], rtol=0, atol=1e-6)
    assert set(out) == {"pred_logits", "pred_boxes"}   # eval mode: no auxiliary outputs


def test_r18_postprocessor_matches_official(r18_official_run):
    cfg, _, fx, out = r18_official_run
    cfg["remap_mscoco_category"] = False
    results = rtdetr_fine.build_postprocessor(cfg)(out, fx["orig_target_sizes_wh"])
    for i, r in enumerate(results):
        assert torch.equal(r["labels"], fx["post_labels"][i])
        torch.testing.assert_close(r["boxes"], fx["post_boxes_xyxy"][i], rtol=0, atol=1e-6)
        torch.testing.assert_close(r["scores"], fx["post_scores"][i], rtol=0, atol=1e-6)


def test_r18_criterion_matches_official(r18_official_run):
    cfg, _, fx, _ = r18_official_run
    criterion = rtdetr_fine.build_criterion(cfg)
    losses = criterion({"pred_logits": fx["pred_logits"], "pred_boxes": fx["pred_boxes"]}, fx["targets"])
    assert set(losses) == {"loss_vfl", "loss_bbox", "loss_giou"}
    for k, expected in fx["losses"].items():
        assert abs(losses[k].item() - float(expected)) <= 1e-6 * abs(float(expected)), k


def test_postprocessor_remaps_to_coco_category_ids(r18_official_run):
    cfg, _, fx, out = r18_official_run
    cfg["remap_mscoco_category"] = True
    results = rtdetr_fine.build_postprocessor(cfg)(out, fx["orig_target_sizes_wh"])
    from rtdetr_fine.data.coco_ids import COCO_LABEL_TO_CATEGORY
    expected = torch.tensor(COCO_LABEL_TO_CATEGORY)[fx["post_labels"][0]]
    assert torch.equal(results[0]["labels"], expected)
    assert results[0]["labels"].max() <= 90 and 12 not in results[0]["labels"].tolist()


# ----------------------------------------------------------------------------- FINE: the authors' module

def _authors_fine(case, dim, num_heads):
    from rtdetr_fine.modules.fine import FINE
    module = FINE(dim, dim, num_heads=num_heads, attention="linear_bottleneck",
                  low_pool=case["low_pool"], high_pool=case["high_pool"]).double().eval()
    module.load_state_dict(fill(read_keys(os.path.join(FIXTURES, "fine_keys.tsv")), case["weights_seed"]),
                           strict=True)   # the authors' parameter names, nothing more, nothing less
    return module


def test_fine_module_matches_the_authors_module():
    """Both RT-DETR placements (pools 2/1 and 4/2), float64: the released module's outputs."""
    fx = torch.load(os.path.join(FIXTURES, "fine_seed0.pt"), weights_only=False)
    assert len(fx["cases"]) == 2
    for case in fx["cases"]:
        module = _authors_fine(case, fx["dim"], fx["num_heads"])
        with torch.no_grad():
            out = module(case["low"].double(), case["high"].double())
        torch.testing.assert_close(out, case["output"], rtol=0, atol=1e-6)
