import torch

import rtdetr_fine
from rtdetr_fine.optim import ModelEMA, build_optimizer, build_scheduler


def test_param_groups_backbone_lr_and_no_decay_on_norms_and_biases(r18_cfg):
    model = rtdetr_fine.build_model(r18_cfg)
    opt = build_optimizer(model, r18_cfg)
    by_id = {id(p): g for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert by_id[id(named["backbone.conv1.conv1_1.conv.weight"])]["lr"] == 1e-5
    assert by_id[id(named["backbone.conv1.conv1_1.conv.weight"])]["weight_decay"] == 1e-4
    assert by_id[id(named["backbone.conv1.conv1_1.norm.weight"])]["weight_decay"] == 0.0
    assert by_id[id(named["decoder.enc_output.1.weight"])]["weight_decay"] == 0.0        # LayerNorm
    assert by_id[id(named["decoder.enc_score_head.bias"])]["weight_decay"] == 0.0
    assert by_id[id(named["decoder.enc_score_head.weight"])] == by_id[id(named["encoder.lateral_convs.0.conv.weight"])]
    assert by_id[id(named["decoder.enc_score_head.weight"])]["lr"] == 1e-4
    assert sum(len(g["params"]) for g in opt.param_groups) == len(named)


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
    r18_cfg["optimizer"].update(type="SGD", momentum=0.8, lr=1e-3, backbone_lr=1e-3, weight_decay=5e-4)
    optimizer = build_optimizer(rtdetr_fine.build_model(r18_cfg), r18_cfg)
    assert isinstance(optimizer, torch.optim.SGD)
    assert {g["momentum"] for g in optimizer.param_groups} == {0.8}
    assert {g["weight_decay"] for g in optimizer.param_groups} == {5e-4, 0.0}     # none on norms / biases
    r18_cfg["optimizer"]["type"] = "AdamW"
    assert isinstance(build_optimizer(rtdetr_fine.build_model(r18_cfg), r18_cfg), torch.optim.AdamW)
