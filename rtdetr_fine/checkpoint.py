"""Checkpoints: atomic writes, and loading the layouts users have (ours and the official ones)."""
import os
import tempfile

import torch

from .anydepth import init_skip_norms_from_main


def save_atomic(obj, path):
    """torch.save to a temp file in the same folder, fsync, then rename over `path`.

    A crash mid-write leaves the previous file at `path` untouched.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_checkpoint(path):
    """torch.load with weights_only=True; errors name the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"cannot read checkpoint {path}: {e}") from None


def extract_state_dict(ckpt, prefer_ema=True):
    """{'ema': {'module': sd}} | {'model': sd} | bare sd  ->  (sd, which one was used)."""
    if not isinstance(ckpt, dict):
        raise ValueError("checkpoint is not a dict")
    ema = ckpt.get("ema")
    if prefer_ema and isinstance(ema, dict) and isinstance(ema.get("module"), dict):
        return ema["module"], "ema"
    if isinstance(ckpt.get("model"), dict):
        return ckpt["model"], "model"
    if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return ckpt, "state_dict"
    raise ValueError("checkpoint has neither 'ema.module', 'model' nor a bare state dict "
                     f"(top-level keys: {sorted(ckpt)[:10]})")


# Other layouts of the same weights: (prefix in the checkpoint, prefix in this model).
PREFIX_RENAMES = (
    ("module.", ""),                                  # saved from a DistributedDataParallel wrapper
    ("encoder.sa_cross_attn.", "encoder.fine."),      # the FINE authors' RT-DETR (HyungseopLee/FINE-FPN)
)


def canonical_names(state):
    """A state dict with the names this model uses (see PREFIX_RENAMES)."""
    out = {}
    for name, value in state.items():
        for old, new in PREFIX_RENAMES:
            if name.startswith(old):
                name = new + name[len(old):]
        out[name] = value
    return out


def load_weights(model, path, finetune=False, prefer_ema=True, log=print):
    """Load a checkpoint into `model`.

    strict (default): every name and shape must match; a mismatch is reported as a list of
    names/shapes (e.g. a checkpoint trained with another num_classes), not a shape traceback.
    finetune=True: tensors whose shape differs (class heads for another num_classes) and
    names the model lacks are skipped and listed; missing ones keep their initialisation.
    Returns which weights were loaded ('ema', 'model' or 'state_dict').
    """
    state, which = extract_state_dict(read_checkpoint(path), prefer_ema)
    state = canonical_names(state)
    own = model.state_dict()
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if finetune:
        skipped = mismatched + unexpected
        if skipped:
            log(f"fine-tuning from {path}: skipped {len(skipped)} tensors: " +
                ", ".join(f"{k} {tuple(state[k].shape)}" for k in skipped))
        if missing:
            log(f"fine-tuning from {path}: {len(missing)} tensors not in the checkpoint keep their init: "
                + ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""))
        state = {k: v for k, v in state.items() if k not in skipped}
        model.load_state_dict(state, strict=False)
        init_skip_norms_from_main(model, state, log)   # any-depth twins the checkpoint lacks: copies, not init
        return which
    if mismatched or unexpected or missing:
        lines = [f"checkpoint {path} ({which}) does not fit this model/config:"]
        lines += [f"  shape {k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched[:8]]
        if any("score_head" in k or "denoising_class_embed" in k for k in mismatched):
            lines.append("  the class heads differ: check num_classes (or fine-tune with -t to reinitialise them)")
        if unexpected:
            lines.append(f"  {len(unexpected)} names not in the model, e.g. {unexpected[:4]}"
                         + (" (FINE weights: enable fine.enabled?)" if any(".fine." in k for k in unexpected) else ""))
        if missing:
            lines.append(f"  {len(missing)} model names not in the checkpoint, e.g. {missing[:4]}"
                         + (" (any-depth skip norms: fine-tune from it with -t)" if any(".skip." in k for k in missing)
                            else ""))
        raise ValueError("\n".join(lines))
    model.load_state_dict(state, strict=False)  # num_batches_tracked may be absent in some exports
    return which
