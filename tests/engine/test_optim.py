import os
import re

import pytest
import torch
from fill_weights import read_keys
from helpers import FIXTURES, config_path

import rtdetr_fine
from rtdetr_fine.config import ConfigError
from rtdetr_fine.engine.optim import ModelEMA, build_optimizer, build_scheduler


# The official v1 YAMLs' groups (lyuwenyu/RT-DETR rtdetr_pytorch/configs/rtdetr), written out here
# independently of our configs: (regex, lr or None, weight_decay or None).
OFFICIAL_GROUPS = {
    "r18": [(r"^(?=.*backbone)(?=.*norm).*$", 1e-5, 0.0), (r"^(?=.*backbone)(?!.*norm).*$", 1e-5, None),
            (r"^(?=.*(?:encoder|decoder))(?=.*(?:norm|bias)).*$", None, 0.0)],       # rtdetr_r18vd_6x_coco.yml
    "r50": [(r"backbone", 1e-5, None), (r"^(?=.*encoder(?=.*bias|.*norm.*weight)).*$", None, 0.0),
            (r"^(?=.*decoder(?=.*bias|.*norm.*weight)).*$", None, 0.0)],           # include/optimizer.yml
}
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def official_lr_wd(name, groups, lr=1e-4, weight_decay=1e-4):
    """(lr, weight_decay) the official get_optim_params gives a parameter name (re.findall)."""
    hits = [(g_lr, g_wd) for pattern, g_lr, g_wd in groups if re.findall(pattern, name)]
    assert len(hits) <= 1, name     # the official code asserts on names in two groups
    g_lr, g_wd = hits[0] if hits else (None, None)
    return (lr if g_lr is None else g_lr, weight_decay if g_wd is None else g_wd)


@pytest.mark.parametrize("arch, tsv", [("r18", "rtdetr_r18vd_keys.tsv"), ("r50", "rtdetr_r50vd_keys.tsv")])
def test_param_groups_equal_the_official_regex_groups_on_official_names(arch, tsv):
    cfg = rtdetr_fine.load_config(config_path(f"rtdetr_{arch}.yml"), ["backbone.pretrained=null"])
    model = rtdetr_fine.build_model(cfg)
    opt = build_optimizer(model, cfg)
    by_id = {id(p): (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    official_names = [k for k in read_keys(os.path.join(FIXTURES, tsv)) if not k.endswith(BUFFER_SUFFIXES)]
    assert set(trainable) <= set(official_names)                 # R50: frozen stem / FrozenBN are not trained
    assert len(by_id) == len(trainable)
    for name, p in trainable.items():
        assert by_id[id(p)] == official_lr_wd(name, OFFICIAL_GROUPS[arch]), name
    # where the official regexes differ from "1-D tensors get no decay":
    named = dict(model.named_parameters())
    if arch == "r18":
        assert by_id[id(named["encoder.input_proj.0.1.weight"])] == (1e-4, 1e-4)     # a BN without "norm"
        assert by_id[id(named["decoder.enc_output.1.weight"])] == (1e-4, 1e-4)       # a LayerNorm likewise
        assert by_id[id(named["backbone.conv1.conv1_1.norm.weight"])] == (1e-5, 0.0)


def test_fine_parameters_follow_the_encoder_groups():
    cfg = rtdetr_fine.load_config(config_path("rtdetr_r18_fine.yml"), ["backbone.pretrained=null"])
    model = rtdetr_fine.build_model(cfg)
    opt = build_optimizer(model, cfg)
    by_id = {id(p): (g["lr"], g["weight_decay"]) for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert by_id[id(named["encoder.fine.0.q_proj.weight"])] == (1e-4, 1e-4)
    assert by_id[id(named["encoder.fine.0.attn_norm.weight"])] == (1e-4, 0.0)
    assert by_id[id(named["encoder.fine.1.linear1.bias"])] == (1e-4, 0.0)


def test_a_name_in_two_groups_is_a_config_error(r18_cfg):
    r18_cfg["optimizer"]["params"] = [{"params": "backbone"}, {"params": "conv1"}]
    with pytest.raises(ConfigError, match=r"backbone\.conv1\.conv1_1\.conv\.weight.*group 0.*group 1"):
        build_optimizer(rtdetr_fine.build_model(r18_cfg), r18_cfg)


@pytest.mark.parametrize("groups, message", [
    ("[{lr: 0.1}]", "regex string 'params'"),
    ("[{params: backbone, momentum: 0.9}]", "unknown key"),
    ("[{params: '(unclosed'}]", "not a valid regex"),
    ("[{params: backbone, lr: -1}]", "non-negative number"),
])
def test_bad_optimizer_groups_name_the_entry(groups, message):
    with pytest.raises(ConfigError, match=r"optimizer\.params\[0\]") as info:
        rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), [f"optimizer.params={groups}"])
    assert message in str(info.value)


def test_backbone_lr_key_points_to_its_replacement():
    with pytest.raises(ConfigError, match="optimizer.backbone_lr.*optimizer.params"):
        rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), ["optimizer.backbone_lr=1e-5"])


def test_linear_warmup_then_milestones():
    cfg = {"optimizer": {"warmup_iters": 4, "lr_milestones": [2], "lr_gamma": 0.1}}
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_scheduler(opt, cfg, iters_per_epoch=5)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:5] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert abs(lrs[10] - 0.1) < 1e-12 and abs(lrs[9] - 1.0) < 1e-12   # epoch 2 starts at iteration 10


def test_ema_follows_the_model_early_and_averages_later():
    model = torch.nn.Linear(2, 1, bias=False)
    w0 = model.weight.detach().clone()
    ema = ModelEMA(model, decay=0.9, warmups=1)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)                                   # decay 0.9 * (1 - e^-1) ~ 0.569
    d = 0.9 * (1 - torch.exp(torch.tensor(-1.0))).item()
    torch.testing.assert_close(ema.module.weight, d * w0 + (1 - d) * torch.ones_like(w0))
    for _ in range(200):
        ema.update(model)
    assert abs(ema.current_decay() - 0.9) < 1e-6          # ramp-up done
    torch.testing.assert_close(ema.module.weight, torch.ones_like(w0), atol=1e-6, rtol=0)
    assert not ema.module.weight.requires_grad
    state = ema.state_dict()
    assert set(state) == {"module", "updates"} and state["updates"] == 201


def test_optimizer_type_sgd_uses_momentum_and_weight_decay(r18_cfg):
    r18_cfg["optimizer"].update(type="SGD", momentum=0.8, lr=1e-3, weight_decay=5e-4)
    optimizer = build_optimizer(rtdetr_fine.build_model(r18_cfg), r18_cfg)
    assert isinstance(optimizer, torch.optim.SGD)
    assert {g["momentum"] for g in optimizer.param_groups} == {0.8}
    assert {g["weight_decay"] for g in optimizer.param_groups} == {5e-4, 0.0}     # the R18 groups still apply
    r18_cfg["optimizer"]["params"] = []                                           # one group, as the SSD configs
    groups = build_optimizer(rtdetr_fine.build_model(r18_cfg), r18_cfg).param_groups
    assert len(groups) == 1 and groups[0]["weight_decay"] == 5e-4 and groups[0]["lr"] == 1e-3
    r18_cfg["optimizer"]["type"] = "AdamW"
    assert isinstance(build_optimizer(rtdetr_fine.build_model(r18_cfg), r18_cfg), torch.optim.AdamW)


@pytest.mark.parametrize("pattern", [r"(a|aa)+$", r"^(a|a)*$"])
def test_an_exponential_regex_fails_fast_naming_the_group(pattern, monkeypatch):
    """Issue 25: `re` would backtrack for years on these names; the bounded match stops within seconds."""
    import threading

    from rtdetr_fine.engine import optim
    from rtdetr_fine.engine.optim import param_groups
    monkeypatch.setattr(optim, "PARAM_REGEX_SECONDS", 0.5)
    model = torch.nn.Module()
    model.register_parameter("a" * 60 + "_x", torch.nn.Parameter(torch.zeros(1)))
    model.backbone = torch.nn.Linear(1, 1)
    outcome = []

    def build():
        try:
            param_groups(model, [{"params": "backbone"}, {"params": pattern}], 1e-4, 1e-4)
        except ConfigError as e:
            outcome.append(str(e))

    worker = threading.Thread(target=build, daemon=True)
    worker.start()
    worker.join(20)
    assert outcome, "param_groups did not fail within the bound"
    assert outcome[0].startswith(f"optimizer.params[1].params {pattern!r} did not finish matching the parameter names within 0.5 s")
