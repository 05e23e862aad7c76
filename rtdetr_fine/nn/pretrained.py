"""Reading a backbone's ImageNet weights (config key backbone.pretrained) for both detector families:
a URL (downloaded once into the torch hub cache) or a local file, loaded weights-only. Every failure
is one message naming the key and the file: a folder, a missing or empty file, a file that is not
torch.save's (text, another format), one holding pickled Python objects, one without tensors;
check_weight_values refuses integer or non-finite weights where the backbone keeps floats."""
import os
import re

import torch


def read_pretrained(source: str, check_hash: bool = False) -> dict:
    """The state dict backbone.pretrained names (its "model" entry when it holds a training checkpoint)."""
    source = str(source)
    if _is_url(source):
        try:
            state = torch.hub.load_state_dict_from_url(source, map_location="cpu", weights_only=True,
                                                       check_hash=check_hash)
        except OSError as e:   # URLError, timeouts, a full disk
            raise OSError(f"backbone.pretrained: could not download {source} ({e}). Download it elsewhere and set "
                          "backbone.pretrained to the local file, or null to train from scratch") from None
    else:
        state = _read_local(source)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"backbone.pretrained: {source} is not a state dict (a mapping of names to tensors): "
                         f"it holds a {type(state).__name__}")
    return state


def local_file(source):
    """The local file a backbone.pretrained value names, or None (true, null, or a URL): an input of the run."""
    return source if isinstance(source, str) and not _is_url(source) else None


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def bad_weight_values(state: dict, own: dict) -> tuple:
    """(integer, non_finite): the names of the tensors of `state` that the model keeps in floating point (same
    name and shape in `own`) but that come as integers (load_state_dict would cast them silently), and those
    holding NaN or inf. Shared by the checkpoint and backbone.pretrained readers, which word the refusal."""
    fits = [k for k, v in state.items() if k in own and own[k].is_floating_point() and own[k].shape == v.shape]
    integer = [k for k in fits if not state[k].is_floating_point()]
    return integer, [k for k in fits if k not in integer and not bool(torch.isfinite(state[k]).all())]


def check_weight_values(source, state: dict, own: dict) -> None:
    """bad_weight_values refused: integer values where the backbone keeps floats (not ImageNet weights of this
    backbone), NaN/inf (a diverged or damaged file). ValueErrors name backbone.pretrained and the file."""
    integer, broken = bad_weight_values(state, own)
    if integer:
        raise ValueError(f"backbone.pretrained: {source}: {len(integer)} weights are stored as integers where the "
                         f"backbone has floating-point weights, e.g. '{integer[0]}' is {state[integer[0]].dtype}; they "
                         "would be cast silently, so the file is refused: not ImageNet weights of this backbone")
    if broken:
        raise ValueError(f"backbone.pretrained: {source}: {len(broken)} weights hold NaN or inf values, e.g. "
                         f"'{broken[0]}': a damaged file or a diverged training; use another weights file")


def _read_local(path: str):
    if os.path.isdir(path):
        raise IsADirectoryError(f"backbone.pretrained: {path} is a directory; give the weights file (.pth) in it")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"backbone.pretrained: no such file {path!r}")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise OSError(f"backbone.pretrained: cannot read {path}: {e.strerror or e}") from None
    if not head:
        raise ValueError(f"backbone.pretrained: {path} is empty (0 bytes): an interrupted copy or download?")
    if head != b"PK\x03\x04" and head[:1] != b"\x80":   # torch.save's zip archive; the legacy pickle format
        raise ValueError(f"backbone.pretrained: {path} is not a PyTorch weights file (torch.save writes a zip "
                         f"archive; this file starts with {head!r})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file; one message naming it
        text = str(e)
        unsafe = re.search(r"GLOBAL ([\w.]+)", text)
        if unsafe:
            reason = (f"it holds a pickled Python object ({unsafe.group(1)}), not only tensors, and weights-only "
                      "loading refuses it for safety; save only the weights (torch.save(model.state_dict(), path))")
        elif text.startswith("Weights only load failed"):   # torch's advice to load unsafely left out
            parts = [p.strip() for p in text.split("\n\n") if p.strip()]
            detail = parts[1] if len(parts) > 2 else "an unsupported pickle"
            reason = f"weights-only loading refuses what it holds ({detail}): save only tensors with torch.save"
        else:
            first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
            reason = f"not a complete PyTorch weights file ({first})"
        raise ValueError(f"backbone.pretrained: cannot load {path}: {reason}") from None
