"""Any-depth RT-DETR: the conversion, depth specs, what each depth runs, loading and the frozen-norm case."""
import copy
import os

import pytest
import torch
from helpers import FIXTURES, config_path
from fill_weights import fill, read_keys

import rtdetr_fine
from rtdetr_fine.anydepth import (Depth, DepthSpecError, SkippableSequential, Switchable, SwitchableConv2d,
                                  SwitchableFrozenBatchNorm2d, SwitchableNorm, SwitchableRepVggBlock,
                                  SwitchableSyncBatchNorm, convert_sync_batchnorm, count_depth_params, depth_spec,
                                  depth_tag, describe_depth, essential_blocks, get_depth, parse_depth, set_depth,
                                  using_depth)
from rtdetr_fine.anydepth.convert import BLOCK0_TWIN
from rtdetr_fine.checkpoint import load_weights
from rtdetr_fine.config import ConfigError
from rtdetr_fine.engine.optim import build_optimizer
from rtdetr_fine.evaluation.flops import count_flops, count_params, flop_counter
from rtdetr_fine.rtdetr.hybrid_encoder import RepVggBlock

SMALL = ["backbone.pretrained=null", "decoder.num_queries=100", "postprocessor.num_top_queries=100"]


def build(name, *overrides):
    cfg = rtdetr_fine.load_config(config_path(f"{name}.yml"), [*SMALL, *overrides])
    return rtdetr_fine.build_model(cfg)


def twins(model):
    """{name: switchable norm} of a converted model."""
    return {n: m for n, m in model.named_modules() if isinstance(m, SwitchableNorm)}


def perturb_twins(model, seed=0):
    """Give every skip twin its own values, so using it is visible in the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for norm in twins(model).values():
            for t in [*norm.skip.parameters(), *norm.skip.buffers()]:
                if t.is_floating_point():
                    t.add_(0.1 * torch.rand(t.shape, generator=g, dtype=t.dtype))


@pytest.fixture(scope="module")
def r18():
    torch.manual_seed(0)
    model = build("rtdetr_r18_anydepth").eval()
    perturb_twins(model)
    return model


def test_essential_blocks_follow_the_authors_rule():
    assert [n - essential_blocks(n) for n in (3, 4, 6, 3)] == [1, 2, 3, 1]       # R50 skippable
    assert [n - essential_blocks(n) for n in (2, 2, 2, 2)] == [1, 1, 1, 1]       # R18
    assert 23 - essential_blocks(23) == 11                                       # R101 res4
    r50 = build("rtdetr_r50_anydepth")
    assert r50.anydepth.stage_blocks == (3, 4, 6, 3) and r50.anydepth.stage_essential == (2, 2, 3, 2)
    assert r50.anydepth.neck_blocks == (3, 3, 3, 3)
    assert (r50.anydepth.full_decoder_layers, r50.anydepth.min_decoder_layers) == (6, 4)


@pytest.mark.parametrize("name,tsv,backbone_twins,neck_twins", [
    # R18: 4 essential BasicBlocks x 2 norms; neck: 3 input proj + AIFI 2 + 2 lateral + 2 downsample
    # + 4 CSP x (conv1, conv2, conv3, RepVGG block 0's conv1 and conv2)
    ("rtdetr_r18", "rtdetr_r18vd_keys.tsv", 8, 29),
    # R50: (2+2+3+2) essential bottlenecks x 3 norms; neck as R18 but CSP conv3 is Identity (expansion 1.0):
    # 25, the authors' 23 BN twins + 2 LN twins
    ("rtdetr_r50", "rtdetr_r50vd_keys.tsv", 27, 25),
])
def test_state_dict_is_the_official_one_plus_skip_twins(name, tsv, backbone_twins, neck_twins):
    model = build(f"{name}_anydepth")
    keys = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    official = list(read_keys(os.path.join(FIXTURES, tsv)).items())
    assert [kv for kv in keys if ".skip." not in kv[0]] == official     # same names, shapes, order
    norms = twins(model)
    assert sum(n.startswith("backbone.") for n in norms) == backbone_twins
    assert sum(n.startswith("encoder.") for n in norms) == neck_twins
    for name_, norm in norms.items():   # every twin sits right after its main norm, same shapes
        assert norm.skip.weight.shape == norm.weight.shape, name_
    # the baseline config is untouched: no any-depth modules, the official key list
    baseline = build(name)
    assert [(k, tuple(v.shape)) for k, v in baseline.state_dict().items()] == official
    assert not twins(baseline) and not hasattr(baseline, "anydepth")


def test_full_depth_equals_the_baseline_exactly_in_float64():
    """Same weights (the conformance fill), nothing skipped: bit-identical outputs (the baseline itself is
    checked against the official model in test_conformance.py)."""
    state = fill(read_keys(os.path.join(FIXTURES, "rtdetr_r18vd_keys.tsv")), seed=0)
    fx = torch.load(os.path.join(FIXTURES, "rtdetr_r18vd_seed0.pt"), weights_only=False)
    images = torch.nn.functional.interpolate(fx["images_uint8"][:1].double() / 255, size=(128, 128), mode="bilinear")
    cfg = rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), ["backbone.pretrained=null"])
    baseline = rtdetr_fine.build_model(cfg).double().eval()
    baseline.load_state_dict(state)
    cfg["anydepth"]["enabled"] = True
    anydepth = rtdetr_fine.build_model(cfg).double().eval()
    missing, unexpected = anydepth.load_state_dict(state, strict=False)
    assert not unexpected and missing and all(".skip." in k for k in missing)
    perturb_twins(anydepth)            # unused at full depth, whatever their values
    with torch.no_grad():
        ref, out = baseline(images), anydepth(images)
        set_depth(anydepth, "min")
        small = anydepth(images)
    assert torch.equal(out["pred_logits"], ref["pred_logits"]) and torch.equal(out["pred_boxes"], ref["pred_boxes"])
    assert not torch.allclose(small["pred_logits"], ref["pred_logits"])   # and a smaller depth computes otherwise


def _runs(model, x):
    """Names of the skippable blocks, twins and decoder layers that run in one eval forward."""
    ran, handles = set(), []
    watched = {n: m for n, m in model.named_modules()
               if n.endswith(".skip") or ".decoder.layers." in n and n.count(".") == 3}
    watched.update({f"{n}.{i}": b for n, m in model.named_modules() if isinstance(m, SkippableSequential)
                    for i, b in enumerate(m)})
    for name, module in watched.items():
        handles.append(module.register_forward_hook(lambda m, i, o, name=name: ran.add(name)))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return ran, set(watched)


def _module_flops(model, x):
    """{module name: FLOPs} of one forward (FlopCounterMode's per-module totals)."""
    with torch.no_grad(), flop_counter() as counter:
        model(x)
    return {name.removeprefix("RTDETR").removeprefix("."): sum(ops.values())
            for name, ops in counter.get_flop_counts().items()}


@pytest.fixture(scope="module")
def full_run(r18):
    """Per-module FLOPs and the watched modules that ran, at full depth, on one 128x128 image."""
    x = torch.rand(1, 3, 128, 128)
    set_depth(r18, "full")
    ran, _ = _runs(r18, x)
    return x, _module_flops(r18, x), ran


@pytest.mark.parametrize("spec,units", [
    ("backbone=1,0,0,0", {"backbone.0"}), ("backbone=0,0,1,0", {"backbone.2"}), ("backbone=0,0,0,1", {"backbone.3"}),
    ("neck=1", {"neck"}), ("min", {"backbone.0", "backbone.1", "backbone.2", "backbone.3", "neck"}),
])
def test_skipped_blocks_do_not_run_and_flops_drop_by_their_cost(r18, full_run, spec, units):
    x, full_flops, full_ran = full_run
    depth = set_depth(r18, spec)
    ran, _ = _runs(r18, x)
    seqs = {n: m for n, m in r18.named_modules() if isinstance(m, SkippableSequential)}
    skipped = {f"{n}.{i}" for n, m in seqs.items() if m.unit in units for i in range(m.num_essential, len(m))}
    assert len(skipped) == sum(1 for u in units if u != "neck") + (8 if "neck" in units else 0)
    blocks = {f"{n}.{i}" for n, m in seqs.items() for i in range(len(m))}
    assert full_ran & blocks == blocks and ran & blocks == blocks - skipped
    skipped_flops = sum(full_flops[n] for n in skipped)
    dropped_layers = range(depth.decoder, 3)
    decoder_flops = sum(full_flops[f"decoder.decoder.layers.{i}"] + full_flops[f"decoder.dec_bbox_head.{i}"]
                        for i in dropped_layers) + full_flops["decoder.query_pos_head"] * len(dropped_layers) // 3
    assert skipped_flops > 0
    assert full_flops[""] - count_flops(r18, x) == skipped_flops + decoder_flops
    set_depth(r18, "full")


def test_fewer_decoder_layers_stop_after_the_last_one_and_return_its_output(r18):
    x = torch.rand(1, 3, 128, 128)
    outputs = {}

    def keep(module, inputs, output):
        outputs["logits"] = output
    for n in (1, 2, 3):
        set_depth(r18, f"decoder={n}")
        ran, _ = _runs(r18, x)
        assert {f"decoder.decoder.layers.{i}" for i in range(3)} & ran == {f"decoder.decoder.layers.{i}" for i in range(n)}
        handle = r18.decoder.dec_score_head[n - 1].register_forward_hook(keep)
        with torch.no_grad():
            out = r18(x)
        handle.remove()
        assert torch.equal(out["pred_logits"], outputs["logits"])   # the last run layer's head
    set_depth(r18, "full")


def test_switchable_norms_are_used_exactly_when_their_unit_skips(r18):
    x = torch.rand(1, 3, 128, 128)
    checked = []

    def check(module, inputs, output):
        main = super(Switchable, module).forward(inputs[0])   # the main norm itself
        twin = module.skip.forward(inputs[0])    # .forward: no hook, so _runs sees only the model's own calls
        assert not torch.allclose(main, twin)     # the two really differ (perturbed twins)
        assert torch.equal(output, twin if module.skipping else main)
        checked.append(module.skipping)

    handles = [m.register_forward_hook(check) for m in twins(r18).values()]
    for spec in ("full", "backbone=0,1,0,1", "neck=1", "min"):
        depth = set_depth(r18, spec)
        checked.clear()
        ran, _ = _runs(r18, x)
        for name, norm in twins(r18).items():
            assert norm.skipping == (norm.unit in depth.skipped_units()), name
            assert (f"{name}.skip" in ran) == norm.skipping, name
        assert len(checked) == len(twins(r18))   # every switchable norm ran once, and was checked
    for h in handles:
        h.remove()
    set_depth(r18, "full")


@pytest.mark.parametrize("spec,message", [
    ("backbone=1,0,1", "3 flags, but the backbone has 4 stages"),
    ("backbone=1,0,1,1,0", "5 flags"),
    ("decoder=4", "decoder=4, but the model has 3 decoder layers"),
    ("decoder=0", "decoder=0"),
    ("decoder=two", "not a number of layers"),
    ("depth=3", "unknown key 'depth'"),
    ("neck=2", "must be 0 (run) or 1 (skip)"),
    ("backbone=1,0,yes,1", "flag 'yes'"),
    ("neck", "is not key=value"),
    ("neck=1 neck=0", "'neck' given twice"),
    ("", "empty depth"),
    ("maximum", "is not key=value"),
])
def test_bad_depth_specs_are_clear_errors(r18, spec, message):
    with pytest.raises(DepthSpecError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        set_depth(r18, spec)
    assert repr(spec) in str(e.value) or spec == ""
    assert get_depth(r18) == r18.anydepth.full    # a bad spec changes nothing


def test_depth_needs_an_anydepth_model_and_config_errors_name_keys():
    with pytest.raises(DepthSpecError, match="anydepth.enabled"):
        set_depth(build("rtdetr_r18"), "min")
    with pytest.raises(ConfigError, match="anydepth.min_decoder_layers"):
        rtdetr_fine.load_config(config_path("rtdetr_r18_anydepth.yml"), ["anydepth.min_decoder_layers=4"])
    with pytest.raises(ConfigError, match="anydepth.min_decoder_layers"):
        rtdetr_fine.load_config(config_path("rtdetr_r18_anydepth.yml"), ["anydepth.min_decoder_layers=two"])
    with pytest.raises(ValueError, match="min_decoder_layers"):   # more than the full model runs
        build("rtdetr_r50_anydepth", "decoder.eval_idx=2")


def test_specs_round_trip_and_name_the_named_sets(r18):
    layout = r18.anydepth
    assert parse_depth("full", layout) == Depth((False,) * 4, False, 3)
    assert parse_depth("min", layout) == Depth((True,) * 4, True, 2)
    assert parse_depth("  backbone=1,1,1,1   neck=1 decoder=2 ", layout) == layout.min
    assert parse_depth("neck=1", layout) == Depth((False,) * 4, True, 3)           # omitted keys: as full
    for spec in ("backbone=1,0,1,1 neck=1 decoder=1", "decoder=2", "full", "min"):
        depth = parse_depth(spec, layout)
        assert parse_depth(depth_spec(depth), layout) == depth
    assert depth_tag(layout.full, layout) == "full" and depth_tag(layout.min, layout) == "min"
    assert depth_tag(parse_depth("backbone=1,0,1,1 decoder=1", layout), layout) == "b1011_n0_d1"
    assert describe_depth(layout.min, layout) == "min (backbone=1,1,1,1 neck=1 decoder=2)"
    with using_depth(r18, "neck=1 decoder=1") as depth:
        assert get_depth(r18) == depth == Depth((False,) * 4, True, 1)
    assert get_depth(r18) == layout.full


def test_state_dict_round_trips(r18, tmp_path):
    path = tmp_path / "anydepth.pth"
    torch.save({"model": r18.state_dict()}, path)
    torch.manual_seed(1)
    other = build("rtdetr_r18_anydepth").eval()
    load_weights(other, str(path))                   # strict: every twin is in the checkpoint
    assert list(other.state_dict()) == list(r18.state_dict())
    for k, v in other.state_dict().items():
        assert torch.equal(v, r18.state_dict()[k]), k
    assert get_depth(other) == other.anydepth.full     # the depth is a setting, not a weight


def test_finetune_from_a_baseline_checkpoint_starts_twins_from_their_main_norms(tmp_path):
    state = fill(read_keys(os.path.join(FIXTURES, "rtdetr_r18vd_keys.tsv")), seed=0)
    state = {k: v.float() for k, v in state.items()}
    path = tmp_path / "official.pth"
    torch.save(state, path)
    model = build("rtdetr_r18_anydepth", "decoder.num_queries=300")
    with pytest.raises(ValueError, match="fine-tune from it with -t"):
        load_weights(model, str(path))                # strict load names what is missing
    logged = []
    load_weights(model, str(path), finetune=True, log=logged.append)
    assert any("skip twins start as copies" in line for line in logged)
    for name, norm in twins(model).items():
        for key, twin_value in norm.skip.state_dict().items():
            if key != "num_batches_tracked":
                assert torch.equal(twin_value, state[f"{name}.{key}"]), f"{name}.skip.{key}"
    # an any-depth checkpoint keeps its own (trained) twins under -t
    perturb_twins(model, seed=3)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save({"model": trained}, tmp_path / "anydepth.pth")
    fresh = build("rtdetr_r18_anydepth", "decoder.num_queries=300")
    load_weights(fresh, str(tmp_path / "anydepth.pth"), finetune=True, log=lambda _: None)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, trained[k]), k


def test_r50_frozen_backbone_norms_get_trainable_twins():
    torch.manual_seed(0)
    cfg = rtdetr_fine.load_config(config_path("rtdetr_r50_anydepth.yml"),
                                  [*SMALL, "decoder.num_queries=30", "decoder.num_denoising=10"])
    model = rtdetr_fine.build_model(cfg)
    backbone_twins = {n: m for n, m in twins(model).items() if n.startswith("backbone.")}
    assert backbone_twins and all(isinstance(m, SwitchableFrozenBatchNorm2d) for m in backbone_twins.values())
    assert all(not list(m.parameters(recurse=False)) for m in backbone_twins.values())     # main: frozen buffers
    assert all(p.requires_grad for m in backbone_twins.values() for p in m.skip.parameters())
    optimizer = build_optimizer(model, cfg)
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert all(id(p) in optimized for m in backbone_twins.values() for p in m.skip.parameters())

    frozen_before = {n: m.weight.clone() for n, m in backbone_twins.items()}
    twin_before = {n: m.skip.weight.detach().clone() for n, m in backbone_twins.items()}
    set_depth(model, "min")
    model.train()
    targets = [{"labels": torch.tensor([1, 5]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.6, 0.1, 0.1]])}]
    loss = sum(rtdetr_fine.build_criterion(cfg)(model(torch.rand(1, 3, 96, 96), targets), targets).values())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    for name, norm in backbone_twins.items():
        assert torch.equal(norm.weight, frozen_before[name]), name          # the main norm stays frozen
        assert not torch.equal(norm.skip.weight, twin_before[name]), name   # its twin learns


def test_depth_params_are_the_baseline_count_at_full_and_follow_what_runs(r18):
    assert count_depth_params(r18) == 20_184_464        # the official R18 count (tests/test_conformance.py)
    assert count_params(r18) == 20_184_464 + sum(p.numel() for m in twins(r18).values() for p in m.skip.parameters())

    def used(spec):
        """Parameters that receive a gradient from the eval outputs (an independent count of what runs)."""
        set_depth(r18, spec)
        r18.zero_grad()
        out = r18(torch.rand(1, 3, 128, 128))
        (out["pred_logits"].sum() + out["pred_boxes"].sum()).backward()
        return sum(p.numel() for p in r18.parameters() if p.grad is not None and p.grad.abs().sum() > 0)

    # what the eval outputs cannot reach (encoder heads behind top-k, auxiliary class heads, denoising
    # embeddings) is the same at every depth with the same decoder layers
    gaps = {}
    for spec in ("full", "backbone=1,1,0,0", "neck=1", "backbone=1,1,1,1 neck=1"):
        reached = used(spec)
        gaps[spec] = count_depth_params(r18) - reached
    set_depth(r18, "full")
    r18.zero_grad()
    assert len(set(gaps.values())) == 1 and gaps["full"] > 0, gaps


def test_r50_min_costs_about_0_6x_of_full_at_640():
    """The authors: all skips + 4 decoder layers 39.5 GMACs vs about 67 GMACs full (~0.59x)."""
    model = build("rtdetr_r50_anydepth", "decoder.num_queries=300").eval().to("meta")   # shapes only: fast
    x = torch.zeros(1, 3, 640, 640, device="meta")
    full = count_flops(model, x)
    set_depth(model, "min")
    small = count_flops(model, x)
    assert 0.55 < small / full < 0.65, small / full


def test_fine_runs_with_its_own_norms_at_every_depth():
    from rtdetr_fine.modules.fine import FINE
    model = build("rtdetr_r18_fine_anydepth").eval()
    fine = [m for m in model.modules() if isinstance(m, FINE)]
    assert len(fine) == 2 and not any(isinstance(m, SwitchableNorm) for f in fine for m in f.modules())
    calls = []
    for f in fine:
        f.register_forward_hook(lambda *_: calls.append(1))
    for spec in ("full", "min"):
        calls.clear()
        set_depth(model, spec)
        with torch.no_grad():
            model(torch.rand(1, 3, 128, 128))
        assert len(calls) == 2, spec


def test_sync_batchnorm_conversion_keeps_the_norms_switchable(r18):
    """sync_bn (the official recipe) under DDP: torch's conversion would silently drop the switching."""
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad(), using_depth(r18, "min"):
        expected = r18(x)["pred_boxes"]
    before = r18.state_dict()
    synced = convert_sync_batchnorm(copy.deepcopy(r18))
    assert not any(type(m) is torch.nn.BatchNorm2d for m in synced.modules())
    switchable = twins(synced)
    assert len(switchable) == len(twins(r18))
    for name, norm in switchable.items():
        layer_norm = isinstance(norm, torch.nn.LayerNorm)          # AIFI's norm1/norm2
        assert layer_norm or isinstance(norm, SwitchableSyncBatchNorm) and isinstance(norm.skip, torch.nn.SyncBatchNorm)
        assert layer_norm == name.startswith("encoder.encoder."), name
    assert {k: v for k, v in synced.state_dict().items()}.keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in synced.state_dict().items())
    with torch.no_grad(), using_depth(synced, "min"):     # SyncBatchNorm in eval mode: no process group needed
        assert torch.equal(synced(x)["pred_boxes"], expected)
        plain = torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(r18))
        assert not torch.equal(plain(x)["pred_boxes"], expected)   # what torch's own conversion would give


# ---------------------------------------------------------------- RepVGG block 0's twins (issue 22)

def test_repvgg_block_0_has_twins_used_when_the_neck_skips(r18):
    blocks = [csp.bottlenecks[0] for csp in [*r18.encoder.fpn_blocks, *r18.encoder.pan_blocks]]
    assert len(blocks) == 4 and all(isinstance(b, SwitchableRepVggBlock) for b in blocks)
    norms = [n for b in blocks for n in (b.conv1.norm, b.conv2.norm)]
    assert all(isinstance(n, SwitchableNorm) and n.unit == "neck" for n in norms)
    assert not any(isinstance(m, SwitchableNorm) for csp in r18.encoder.fpn_blocks for b in list(csp.bottlenecks)[1:]
                   for m in b.modules())          # the skippable blocks have none


@pytest.mark.parametrize("spec", ["full", "neck=1", "min", "backbone=0,1,0,1 neck=1 decoder=1"])
def test_deploy_fuses_repvgg_block_0_with_the_norms_of_each_depth(r18, spec):
    """The deploy form (RepVGG fused) computes what the trained form computes at every depth: block 0
    keeps one fused conv per norm set, and each depth runs the one of the norms it uses."""
    x = torch.rand(1, 3, 128, 128, dtype=torch.float64)
    trained = copy.deepcopy(r18).double().eval()
    deployed = copy.deepcopy(trained).deploy()
    assert not any(hasattr(m, "conv1") for m in deployed.modules() if isinstance(m, RepVggBlock))   # all fused
    convs = [m for m in deployed.modules() if isinstance(m, SwitchableConv2d)]
    assert len(convs) == 4 and all(not torch.equal(c.weight, c.skip.weight) for c in convs)
    with torch.no_grad():
        set_depth(trained, spec), set_depth(deployed, spec)
        expected, got = trained(x), deployed(x)
    assert all(c.skipping == ("neck" in get_depth(deployed).skipped_units()) for c in convs)
    torch.testing.assert_close(got["pred_logits"], expected["pred_logits"], rtol=0, atol=1e-9)
    torch.testing.assert_close(got["pred_boxes"], expected["pred_boxes"], rtol=0, atol=1e-9)
    assert count_depth_params(deployed) < count_params(deployed)     # the idle fused twin does not count


def test_older_anydepth_checkpoints_without_block_0_twins_still_load(r18, tmp_path):
    """Saved before RepVGG block 0 had twins: it ran block 0 with its main norms at every depth, so the
    twins start as copies of them (and the model computes what that checkpoint computed), with a log line."""
    old = {k: v for k, v in r18.state_dict().items() if not BLOCK0_TWIN.match(k)}
    assert len(r18.state_dict()) - len(old) == 8 * 5          # 8 norms x (weight, bias, mean, var, batches)
    torch.save({"model": old}, tmp_path / "before_issue_22.pth")
    model = build("rtdetr_r18_anydepth").eval()
    logged = []
    load_weights(model, str(tmp_path / "before_issue_22.pth"), log=logged.append)
    assert any("before the neck's RepVGG block 0 had twins" in line for line in logged)
    for csp in [*model.encoder.fpn_blocks, *model.encoder.pan_blocks]:
        for norm in (csp.bottlenecks[0].conv1.norm, csp.bottlenecks[0].conv2.norm):
            assert torch.equal(norm.skip.weight, norm.weight) and torch.equal(norm.skip.running_var, norm.running_var)
    assert torch.equal(model.encoder.lateral_convs[0].norm.skip.weight, r18.encoder.lateral_convs[0].norm.skip.weight)
    # other missing twins are not older checkpoints of ours: still an error naming them
    del old["encoder.lateral_convs.0.norm.skip.weight"]
    torch.save({"model": old}, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="1 model tensors are not in the checkpoint"):
        load_weights(model, str(tmp_path / "broken.pth"), log=logged.append)
