"""train.py's checkpoints: the state written every epoch and its restoration for -r (resume)."""
import torch

from .. import distributed as du
from ..checkpoint import load_weights, read_checkpoint
from ..data.classes import class_set_from_checkpoint


def training_state(model, ema, optimizer, scheduler, scaler, epoch: int, global_step: int, best_ap: float, cfg: dict,
                   classes, best_key: str = "best_AP") -> dict:
    """What train.py writes to last.pth / best.pth: everything a resumed run needs, and the class set.
    best_ap is the best value so far of the config's metric, saved as best_key (best_AP for COCO AP)."""
    return {
        "model": du.unwrap(model).state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,
        "iteration": global_step,
        best_key: best_ap,
        "config": cfg,
        "classes": classes.to_dict(),   # label -> category id and name, for eval.py / predict.py
    }


def restore_training(path: str, model, ema, optimizer, scheduler, scaler, classes,
                     best_key: str = "best_AP") -> tuple[int, int, float]:
    """Load a train.py checkpoint into the training objects; returns (next epoch, iteration, best value of
    the metric saved as best_key; -1.0 when the run was scored with another metric).

    A checkpoint trained on another class set is refused (naming both), as is one that is not a
    train.py checkpoint."""
    ckpt = read_checkpoint(path)
    for key in ("model", "optimizer", "lr_scheduler", "epoch"):
        if key not in ckpt:
            raise ValueError(f"{path} is not a train.py checkpoint (no '{key}'); use -t to start from its weights")
    saved = class_set_from_checkpoint(ckpt, path)
    if saved is not None and not saved.same_labels(classes):
        raise ValueError(f"{path} was trained with category ids {list(saved.category_ids)[:20]} "
                         f"({saved.num_classes} classes), but the training file now gives "
                         f"{list(classes.category_ids)[:20]} ({classes.num_classes} classes); "
                         "resume with the same data, or start a fine-tuning run with -t")
    _check_progress(path, ckpt, best_key)
    load_weights(model, path, prefer_ema=False)
    if ema is not None and ckpt.get("ema"):
        _load_state(path, "ema", ema, ckpt["ema"])
        _check_ema(path, ema)
    _load_optimizer(path, optimizer, ckpt)
    _load_state(path, "lr_scheduler", scheduler, ckpt["lr_scheduler"])
    if scaler is not None and ckpt.get("scaler"):
        _load_state(path, "scaler", scaler, ckpt["scaler"])
    return ckpt["epoch"] + 1, ckpt["iteration"], ckpt.get(best_key, -1.0)


def _is_count(value) -> bool:
    """An integer >= 0 (a bool is not a count, though Python's True == 1)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_progress(path, ckpt, best_key) -> None:
    """epoch and iteration are counts (integers >= 0), the best value a number: anything else would resume
    at a wrong epoch (e.g. -5 trains epochs -4, -3, ...) or fail deep in the loop."""
    for key in ("epoch", "iteration"):
        value = ckpt.get(key)
        if not _is_count(value):
            raise ValueError(f"checkpoint {path}: its '{key}' must be a count (an integer >= 0), got {value!r}; "
                             "not a checkpoint train.py wrote (start a fine-tuning run from its weights with -t)")
    best = ckpt.get(best_key, -1.0)
    if isinstance(best, bool) or not isinstance(best, (int, float)):
        raise ValueError(f"checkpoint {path}: its '{best_key}' must be a number, got {best!r}")


def _check_ema(path, ema) -> None:
    """The loaded EMA state is one train.py could have written: a count of updates (it sets the decay of every
    later update) and finite averaged weights (load_weights checks the model's; an EMA holding NaN would
    carry them into every later evaluation and best.pth)."""
    updates = ema.updates
    if not _is_count(updates):
        raise ValueError(f"checkpoint {path}: its EMA 'updates' must be a count (an integer >= 0), got {updates!r}; "
                         "not the state train.py writes (start a new run from its weights with -t)")
    broken = [k for k, v in ema.module.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise ValueError(f"checkpoint {path}: its EMA weights are not finite: {len(broken)} tensors hold NaN or inf "
                         f"values, e.g. 'ema.module.{broken[0]}'; the averaged model diverged: resume from an earlier "
                         "checkpoint")


def _load_optimizer(path, optimizer, ckpt) -> None:
    """optimizer.load_state_dict, whose refusal of other parameter groups names the config key that makes them."""
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError, TypeError) as e:
        saved = ckpt["optimizer"].get("param_groups", []) if isinstance(ckpt["optimizer"], dict) else []
        sizes = [len(g.get("params", ())) if isinstance(g, dict) else "?" for g in saved]
        recorded = ckpt.get("config", {}).get("optimizer", {}).get("params") if isinstance(ckpt.get("config"), dict) \
            else None
        raise ValueError(f"checkpoint {path}: its optimizer state does not fit the optimizer of this config "
                         f"({e}): the checkpoint has {len(sizes)} parameter groups of {sizes} tensors, this config's "
                         f"optimizer.params gives {len(optimizer.param_groups)} of "
                         f"{[len(g['params']) for g in optimizer.param_groups]}; resume with the optimizer.params the "
                         "run was trained with" + (f" ({recorded!r})" if recorded is not None else "")
                         + ", or start a new run from its weights with -t") from None


def _load_state(path, name, target, state) -> None:
    """target.load_state_dict(state); a state of another form is a ValueError naming the checkpoint and entry."""
    try:
        target.load_state_dict(state)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, RuntimeError) as e:
        raise ValueError(f"checkpoint {path}: its '{name}' entry does not fit ({type(e).__name__}: {e}); not the "
                         "state train.py writes (start a new run from its weights with -t)") from None
