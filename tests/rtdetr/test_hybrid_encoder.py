"""FINE (and the other alignment modules) inside the hybrid encoder: where it sits, what it adds, and
that the baseline is untouched."""
import pytest
import torch
from helpers import config_path

import rtdetr_fine
from rtdetr_fine.modules.fine import FINE, FINEAlignment
from rtdetr_fine.rtdetr.hybrid_encoder import HybridEncoder

R18_PARAMS, R50_PARAMS = 20_184_464, 42_891_372


def _cfg(name, *overrides):
    return rtdetr_fine.load_config(config_path(name), ["backbone.pretrained=null", *overrides])


def _params(model):
    return sum(p.numel() for p in model.parameters())


def test_r18_fine_adds_about_1_58m_params_and_r50_reaches_44_47m():
    r18 = _params(rtdetr_fine.build_model(_cfg("rtdetr_r18_fine.yml")))
    r50 = _params(rtdetr_fine.build_model(_cfg("rtdetr_r50_fine.yml")))
    assert abs((r18 - R18_PARAMS) - 1_580_000) <= 0.01 * 1_580_000      # paper: 20.2M -> 21.8M
    assert r18 - R18_PARAMS == 1_579_552                                 # two modules, linear + RMSNorm (16)
    assert abs(r50 - 44_470_000) <= 0.01 * 44_470_000                    # paper: 44.5M
    assert r50 - R50_PARAMS == 1_579_552


def test_fine_disabled_or_absent_keeps_the_official_state_dict():
    base = rtdetr_fine.build_model(_cfg("rtdetr_r18.yml")).state_dict()
    off = rtdetr_fine.build_model(_cfg("rtdetr_r18_fine.yml", "fine.enabled=false")).state_dict()
    assert [(k, v.shape) for k, v in base.items()] == [(k, v.shape) for k, v in off.items()]
    on = rtdetr_fine.build_model(_cfg("rtdetr_r18_fine.yml")).state_dict()
    assert {k for k in on if k not in base} == {k for k in on if k.startswith("encoder.fine.")}


@pytest.mark.parametrize("variant, replaced, added", [
    ("fapn", ("encoder.input_proj.",), ("encoder.feature_selection.", "encoder.offset.", "encoder.feature_align.")),
    ("adafpn", ("encoder.fpn_blocks.",), ("encoder.ada_fpn_blocks.",)),
    ("mgc", ("encoder.input_proj.",), ("encoder.mgc.",)),
])
def test_table2_alignments_change_only_their_layers_and_off_is_the_official_state_dict(variant, replaced, added):
    base = rtdetr_fine.build_model(_cfg("rtdetr_r18.yml")).state_dict()
    config = f"ablation/rtdetr_r18_{variant}.yml"
    off = rtdetr_fine.build_model(_cfg(config, "encoder.alignment=null")).state_dict()
    assert [(k, v.shape) for k, v in base.items()] == [(k, v.shape) for k, v in off.items()]
    on = rtdetr_fine.build_model(_cfg(config)).state_dict()
    assert {k for k in base if k not in on} == {k for k in base if k.startswith(replaced)}
    assert {k for k in on if k not in base} == {k for k in on if k.startswith(added)}
    assert all(on[k].shape == v.shape for k, v in base.items() if k in on)


@pytest.mark.parametrize("mode", ["quadratic", "linear", "linear_bottleneck"])
def test_attention_switch_from_the_command_line(mode):
    cfg = _cfg("rtdetr_r18_fine.yml", f"fine.attention={mode}")
    enc = rtdetr_fine.build_model(cfg).encoder
    assert len(enc.fine) == 2 and all(isinstance(m, FINE) and m.attention == mode for m in enc.fine)
    if mode == "linear_bottleneck":   # both maps pooled to the stride-32 map's size
        assert [(m.low_pool, m.high_pool) for m in enc.fine] == [(2, 1), (4, 2)]


def test_ablation_configs_select_their_mode():
    for mode in ["quadratic", "linear", "linear_bottleneck"]:
        cfg = rtdetr_fine.load_config(config_path(f"ablation/rtdetr_r18_fine_{mode}.yml"))
        assert cfg["fine"]["enabled"] and cfg["fine"]["attention"] == mode


def test_fine_refines_the_low_level_map_before_each_top_down_fusion(monkeypatch):
    """FINE's output (not P_l) is what the FPN block concatenates with the upsampled F_{l+1}."""
    torch.manual_seed(0)
    enc = HybridEncoder(in_channels=[32, 64, 128], hidden_dim=64, nhead=4, dim_feedforward=128, expansion=0.5)
    enc = FINEAlignment(num_heads=4, attention="linear_bottleneck", modulation="multiply").attach(enc).eval()
    feats = [torch.rand(1, 32, 32, 32), torch.rand(1, 64, 16, 16), torch.rand(1, 128, 8, 8)]
    seen = {}
    for j, (fine, fpn) in enumerate(zip(enc.fine, enc.fpn_blocks)):
        fine.register_forward_hook(lambda m, i, o, j=j: seen.__setitem__(("fine", j), (i, o)))
        fpn.register_forward_hook(lambda m, i, o, j=j: seen.__setitem__(("fpn", j), i[0]))
    with torch.no_grad():
        outs = enc(feats)
    assert [o.shape[-1] for o in outs] == [32, 16, 8]
    for j, low_size in [(0, 16), (1, 32)]:   # first fusion refines P4 (16x16), second P3 (32x32)
        (low, high), refined = seen[("fine", j)]
        assert low.shape[-1] == low_size and high.shape[-1] == low_size // 2
        assert refined.shape == low.shape
        assert torch.equal(seen[("fpn", j)][:, 64:], refined)          # concat([upsampled F, refined P])


@pytest.mark.parametrize("config, fine_on, mode", [("rtdetr_r18.yml", False, "nearest"),
                                                   ("rtdetr_r18_fine.yml", True, "bilinear"),
                                                   ("rtdetr_r50_fine.yml", True, "bilinear")])
def test_top_down_upsampling_is_bilinear_with_fine_as_the_authors_wired_it(config, fine_on, mode):
    """F_{l+1} (the lateral conv's output) is upsampled 2x before the concatenation: nearest in the
    official baseline, bilinear (align_corners False) in the FINE authors' RT-DETR."""
    torch.manual_seed(0)
    cfg = _cfg(config, "decoder.num_queries=10", "postprocessor.num_top_queries=10")
    enc = rtdetr_fine.build_model(cfg).encoder.eval()
    assert hasattr(enc, "fine") == fine_on and (enc.alignment.upsample if fine_on else "nearest") == mode
    seen = {}
    for j, (lateral, fpn) in enumerate(zip(enc.lateral_convs, enc.fpn_blocks)):
        lateral.register_forward_hook(lambda m, i, o, j=j: seen.__setitem__(("lateral", j), o))
        fpn.register_forward_hook(lambda m, i, o, j=j: seen.__setitem__(("fpn", j), i[0]))
    feats = [torch.rand(1, c, 64 // s, 64 // s) for c, s in zip(cfg["encoder"]["in_channels"], (1, 2, 4))]
    with torch.no_grad():
        enc(feats)
    for j in range(2):
        high = seen[("lateral", j)]
        expected = torch.nn.functional.interpolate(high, scale_factor=2.0, mode=mode,
                                                   **({"align_corners": False} if mode == "bilinear" else {}))
        torch.testing.assert_close(seen[("fpn", j)][:, :256], expected, rtol=0, atol=0)


def test_fine_upsample_nearest_is_selectable():
    enc = rtdetr_fine.build_model(_cfg("rtdetr_r18_fine.yml", "fine.upsample=nearest")).encoder
    assert enc.alignment.upsample == "nearest"
    with pytest.raises(rtdetr_fine.ConfigError, match="fine.upsample"):
        _cfg("rtdetr_r18_fine.yml", "fine.upsample=bicubic")


@pytest.mark.parametrize("size", [(640, 640), (512, 768)])
def test_r18_fine_bottleneck_runs_at_640_and_non_square(size):
    cfg = _cfg("rtdetr_r18_fine.yml", "decoder.num_queries=50", "postprocessor.num_top_queries=50")
    model = rtdetr_fine.build_model(cfg).eval()
    shapes = []
    for m in model.encoder.fine:
        m.register_forward_hook(lambda mod, i, o: shapes.append((tuple(i[0].shape), tuple(o.shape))))
    with torch.no_grad():
        out = model(torch.rand(1, 3, *size))
    h, w = size
    assert shapes == [((1, 256, h // 16, w // 16),) * 2, ((1, 256, h // 8, w // 8),) * 2]
    assert torch.isfinite(out["pred_logits"]).all()
