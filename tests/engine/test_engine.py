import pytest
import torch

import rtdetr_fine
from rtdetr_fine.engine import NonFiniteLossError, train_one_epoch
from rtdetr_fine.engine.optim import build_optimizer, build_scheduler


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


class RecordingWriter:
    """The SummaryWriter calls train_one_epoch makes."""

    def __init__(self):
        self.scalars = {}

    def add_scalar(self, tag, value, step):
        self.scalars.setdefault(tag, []).append((step, value))


class TwoTermCriterion(torch.nn.Module):
    """A criterion with loss names of its own (as SSD's)."""

    def forward(self, outputs, targets):
        return {"loss_a": outputs.square().mean(), "loss_b": 2 * outputs.abs().mean()}


def test_tensorboard_logs_every_term_the_criterion_returns():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    loader = [(torch.rand(4, 3), [{}] * 4)] * 4

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = model

        def forward(self, images, targets=None):
            return self.linear(images)

    writer = RecordingWriter()
    means, step = train_one_epoch(Model(), TwoTermCriterion(), loader, optimizer, scheduler, torch.device("cpu"),
                                  epoch=0, writer=writer, log_every=2)
    assert step == 4 and set(means) == {"loss", "loss_a", "loss_b"}
    assert set(writer.scalars) == {"train/loss", "train/loss_a", "train/loss_b", "train/lr"}
    assert [s for s, _ in writer.scalars["train/loss_a"]] == [2, 4]
    for (_, total), (_, a), (_, b) in zip(*(writer.scalars[f"train/{k}"] for k in ("loss", "loss_a", "loss_b"))):
        assert total == pytest.approx(a + b)
