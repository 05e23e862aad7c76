import pytest
import torch

import rtdetr_fine
from rtdetr_fine.engine import NonFiniteLossError, train_one_epoch
from rtdetr_fine.optim import build_optimizer, build_scheduler


class NaNAfterFirstStep(torch.nn.Module):
    """Wraps the real criterion; from the second call on, loss_giou becomes NaN."""

    def __init__(self, criterion):
        super().__init__()
        self.criterion, self.calls = criterion, 0

    def forward(self, outputs, targets):
        self.calls += 1
        losses = self.criterion(outputs, targets)
        if self.calls > 1:
            losses["loss_giou"] = losses["loss_giou"] * float("nan")
        return losses


def test_non_finite_loss_stops_with_iteration_and_terms(r18_cfg):
    r18_cfg["num_classes"] = 3
    r18_cfg["decoder"]["num_queries"] = 20
    model = rtdetr_fine.build_model(r18_cfg)
    criterion = NaNAfterFirstStep(rtdetr_fine.build_criterion(r18_cfg))
    optimizer = build_optimizer(model, r18_cfg)
    scheduler = build_scheduler(optimizer, r18_cfg, 3)
    target = {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.3, 0.3]])}
    loader = [(torch.rand(1, 3, 64, 64), [target])] * 3
    with pytest.raises(NonFiniteLossError) as e:
        train_one_epoch(model, criterion, loader, optimizer, scheduler, torch.device("cpu"), epoch=0,
                        global_step=7)
    msg = str(e.value)
    assert "iteration 8" in msg and "loss_giou=nan" in msg
    assert all(torch.isfinite(p).all() for p in model.parameters())   # the NaN step was never applied
