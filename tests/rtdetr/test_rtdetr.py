"""Model behaviour beyond the fixture: deploy fusion, training outputs, empty images, input sizes."""
import copy

import pytest
import torch

import rtdetr_fine


def _small_cfg(cfg):
    cfg["decoder"]["num_queries"] = 30
    cfg["decoder"]["num_denoising"] = 20
    cfg["postprocessor"]["num_top_queries"] = 30
    return cfg


def test_deploy_mode_equals_training_form(r18_cfg):
    torch.manual_seed(0)
    model = rtdetr_fine.build_model(r18_cfg).double().eval()
    # non-trivial BN statistics so the fusion is really exercised
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    x = torch.rand(1, 3, 320, 320, dtype=torch.float64)
    with torch.no_grad():
        ref = model(x)
        fused = copy.deepcopy(model).deploy()
        out = fused(x)
    n_fused = sum(1 for m in fused.modules() if type(m).__name__ == "RepVggBlock" and hasattr(m, "conv"))
    assert n_fused == 12   # 4 CSP blocks x 3 RepVGG blocks
    torch.testing.assert_close(out["pred_logits"], ref["pred_logits"], rtol=0, atol=1e-9)
    torch.testing.assert_close(out["pred_boxes"], ref["pred_boxes"], rtol=0, atol=1e-9)


def _targets():
    return [
        {"labels": torch.tensor([1, 5]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.3, 0.6, 0.1, 0.1]])},
        {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)},   # image without boxes
    ]


def test_training_forward_returns_aux_and_denoising_outputs_and_finite_loss(r18_cfg):
    torch.manual_seed(0)
    cfg = _small_cfg(r18_cfg)
    model = rtdetr_fine.build_model(cfg).train()
    criterion = rtdetr_fine.build_criterion(cfg)
    out = model(torch.rand(2, 3, 256, 256), _targets())
    assert len(out["aux_outputs"]) == 3          # 2 earlier decoder layers + encoder top-k
    assert len(out["dn_aux_outputs"]) == 3       # every decoder layer on the denoising queries
    assert out["pred_logits"].shape == (2, 30, 80)
    losses = criterion(out, _targets())
    assert {"loss_vfl", "loss_vfl_aux_0", "loss_vfl_aux_2", "loss_bbox_dn_2", "loss_giou_dn_0"} <= set(losses)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.decoder.denoising_class_embed.weight.grad.abs().sum() > 0


def test_training_batch_without_any_box_gives_finite_loss(r18_cfg):
    cfg = _small_cfg(r18_cfg)
    model = rtdetr_fine.build_model(cfg).train()
    empty = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}] * 2
    out = model(torch.rand(2, 3, 128, 128), empty)
    assert "dn_aux_outputs" not in out
    total = sum(rtdetr_fine.build_criterion(cfg)(out, empty).values())
    assert torch.isfinite(total) and total > 0   # the classification term still pushes scores down
    total.backward()


@pytest.mark.parametrize("size", [(320, 320), (256, 384)])
def test_eval_runs_at_other_sizes(r18_cfg, size):
    cfg = _small_cfg(r18_cfg)
    model = rtdetr_fine.build_model(cfg).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, *size))
    assert out["pred_boxes"].shape == (1, 30, 4)
    assert ((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1)).all()


def test_deploy_converts_every_module_that_offers_a_deploy_form(r18_cfg):
    """RTDETR.deploy knows no module types: anything with convert_to_deploy is converted."""
    calls = []

    class WithDeployForm(torch.nn.Identity):
        def convert_to_deploy(self):
            calls.append(self)

    model = rtdetr_fine.build_model(r18_cfg)
    extra = WithDeployForm()
    model.encoder.extra = extra
    model.deploy()
    assert calls == [extra] and not model.training
    assert not any(hasattr(m, "conv1") for m in model.modules() if type(m).__name__ == "RepVggBlock")
