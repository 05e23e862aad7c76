"""Resuming from a checkpoint whose progress or optimizer state does not fit (issue 25): one message naming
the checkpoint and the entry (or the config key), never a TypeError or a run over negative epochs."""
import pytest
import torch
from torch import nn

from rtdetr_fine.engine.optim import param_groups
from rtdetr_fine.engine.training_state import restore_training


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone, self.decoder = nn.Linear(2, 2), nn.Linear(2, 2)


def training_objects(groups):
    torch.manual_seed(0)
    model = Tiny()
    optimizer = torch.optim.AdamW(param_groups(model, groups, 1e-4, 1e-4), lr=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0)
    return model, optimizer, scheduler


def write_checkpoint(tmp_path, groups=(), **changes):
    model, optimizer, scheduler = training_objects(list(groups))
    ckpt = {"model": model.state_dict(), "ema": None, "optimizer": optimizer.state_dict(),
            "lr_scheduler": scheduler.state_dict(), "scaler": None, "epoch": 3, "iteration": 30, "best_AP": 0.5,
            "config": {"optimizer": {"params": list(groups)}}}
    ckpt.update(changes)
    path = tmp_path / "last.pth"
    torch.save(ckpt, path)
    return str(path)


def restore(path, groups=()):
    model, optimizer, scheduler = training_objects(list(groups))
    return restore_training(path, model, None, optimizer, scheduler, None, classes=None)


def test_a_good_checkpoint_resumes_at_the_next_epoch(tmp_path):
    assert restore(write_checkpoint(tmp_path)) == (4, 30, 0.5)


@pytest.mark.parametrize("key,value", [("epoch", "abc"), ("epoch", -5), ("epoch", 2.5), ("epoch", True),
                                       ("iteration", -1), ("iteration", "ten")])
def test_a_progress_entry_that_is_not_a_count_is_refused(tmp_path, key, value):
    path = write_checkpoint(tmp_path, **{key: value})
    with pytest.raises(ValueError, match=rf"checkpoint .*last\.pth: its '{key}' must be a count \(an integer >= 0\), "
                                         rf"got {value!r}"):
        restore(path)


def test_a_best_value_that_is_not_a_number_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"last\.pth: its 'best_AP' must be a number, got 'high'"):
        restore(write_checkpoint(tmp_path, best_AP="high"))


@pytest.mark.parametrize("resume_groups", [[{"params": "backbone", "lr": 1e-5}],
                                           [{"params": "backbone"}, {"params": "decoder.weight"}]])
def test_other_optimizer_groups_name_the_config_key(tmp_path, resume_groups):
    path = write_checkpoint(tmp_path, groups=[])
    with pytest.raises(ValueError, match=r"last\.pth: its optimizer state does not fit .* this config's "
                                         r"optimizer\.params gives \d+ of .* resume with the optimizer\.params the run "
                                         r"was trained with \(\[\]\)"):
        restore(path, resume_groups)


@pytest.mark.parametrize("key,value", [("lr_scheduler", 5), ("lr_scheduler", {"_schedulers": 1}), ("iteration", None)])
def test_a_damaged_entry_names_the_checkpoint_and_entry(tmp_path, key, value):
    path = write_checkpoint(tmp_path, **{key: value})
    with pytest.raises(ValueError, match=rf"checkpoint .*last\.pth: its '{key}' "):
        restore(path)


def ema_state(**changes):
    from rtdetr_fine.engine.optim import ModelEMA
    state = ModelEMA(Tiny()).state_dict()
    state.update(changes)
    return state


def restore_with_ema(path):
    from rtdetr_fine.engine.optim import ModelEMA
    model, optimizer, scheduler = training_objects([])
    ema = ModelEMA(model)
    return restore_training(path, model, ema, optimizer, scheduler, None, classes=None), ema


def test_ema_state_is_restored_and_checked(tmp_path):
    good = ema_state(updates=7)
    (_, ema) = restore_with_ema(write_checkpoint(tmp_path, ema=good))
    assert ema.updates == 7 and torch.equal(ema.module.decoder.weight, good["module"]["decoder.weight"])
    nan = ema_state()
    nan["module"]["decoder.weight"] = torch.full((2, 2), float("nan"))
    with pytest.raises(ValueError, match=r"last\.pth: its EMA weights are not finite: 1 tensors hold NaN or inf "
                                         r"values, e.g. 'ema\.module\.decoder\.weight'"):
        restore_with_ema(write_checkpoint(tmp_path, ema=nan))
    for updates in (-1, "7", 2.5, True):
        with pytest.raises(ValueError, match=rf"last\.pth: its EMA 'updates' must be a count .* got {updates!r}"):
            restore_with_ema(write_checkpoint(tmp_path, ema=ema_state(updates=updates)))
