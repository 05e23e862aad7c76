"""train.py's checkpoints: the state written every epoch and its restoration for -r (resume)."""
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
    load_weights(model, path, prefer_ema=False)
    if ema is not None and ckpt.get("ema"):
        ema.load_state_dict(ckpt["ema"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["lr_scheduler"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    return ckpt["epoch"] + 1, ckpt["iteration"], ckpt.get(best_key, -1.0)
