"""Checkpoints: atomic writes, loading the layouts users have (ours and the official ones), and the
class set a run uses (the checkpoint's, else the annotation file's, else COCO's)."""
from __future__ import annotations

import glob
import json
import os
import re
import tempfile

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors

from .anydepth.convert import block0_twins_missing
from .anydepth.norms import init_skip_norms_from_main
from .cli import raise_write_error
from .config import DEFAULTS, ConfigError, config_from_dict, leaf_keys, load_config
from .data.classes import AUTO, ClassSet, class_set_from_categories, class_set_from_checkpoint, coco_class_set
from .data.coco import read_coco_json
from .data.loaders import config_ann_file
from .layouts import to_our_layout
from .layouts import transformers as hf_layout
from .nn.pretrained import bad_weight_values
from .rtdetr.backbone import ARCH


def save_atomic(obj, path):
    """torch.save to a temp file in the same folder, fsync, then rename over `path`.

    A crash mid-write leaves the previous file at `path` untouched. A failed write (disk full, I/O
    error) removes the temp file and raises cli.WriteError naming `path` and the OS error.
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
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise_write_error(path, e)
        raise


def read_checkpoint(path):
    """torch.load with weights_only=True; a transformers checkpoint (a save_pretrained folder or its
    .safetensors file) is read with safetensors instead, as the bare state dict it is. Errors name the
    file and say what is wrong with it (missing, empty, not a checkpoint, truncated, holding pickled
    objects) in one message."""
    path, kind = locate_checkpoint(path)
    try:
        if kind == "safetensors":
            return load_safetensors(path, device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types; re-raised naming the file and the reason
        raise ValueError(f"cannot read checkpoint {path}: {load_failure_reason(e)}") from None


def check_checkpoint_file(path) -> None:
    """The cheap checks of read_checkpoint, without loading: the file exists, is readable, is not empty
    and starts like a torch.save or safetensors file. For the command lines to fail before they build anything."""
    locate_checkpoint(path)


def locate_checkpoint(path) -> tuple:
    """(the file to read, 'torch' | 'safetensors') after the cheap checks. A folder is a transformers
    checkpoint (transformers_weights_file); a file is told by its first bytes, not its name."""
    if os.path.isdir(path):
        path = transformers_weights_file(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with open(path, "rb") as f:
            head, size = f.read(9), os.fstat(f.fileno()).st_size
    except OSError as e:
        raise OSError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    if not head:
        raise ValueError(f"checkpoint {path} is empty (0 bytes): an interrupted copy or download?")
    if head[:4] == ZIP_MAGIC or head[:1] == PICKLE_MAGIC:
        return path, "torch"
    if _safetensors_header_fits(head, size):
        return path, "safetensors"
    if path.endswith(".safetensors"):
        raise ValueError(f"{path} is not a readable safetensors file: its header is truncated or corrupt; "
                         "copy or download it again")
    raise ValueError(f"{path} is not a PyTorch checkpoint (torch.save writes a zip archive; this file starts "
                     f"with the bytes {head[:4]!r}) nor a safetensors file")


ZIP_MAGIC = b"PK\x03\x04"   # torch.save's format since PyTorch 1.6
PICKLE_MAGIC = b"\x80"       # the legacy format starts with a pickle protocol byte


def _safetensors_header_fits(head: bytes, size: int) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then that many bytes of JSON ('{...')."""
    length = int.from_bytes(head[:8], "little")
    return len(head) == 9 and head[8:] == b"{" and 2 <= length <= size - 8


def transformers_weights_file(folder) -> str:
    """A transformers checkpoint folder (save_pretrained's, or a hub download: config.json +
    model.safetensors) -> its model.safetensors, once config.json, where there, names RT-DETR v1.
    Errors name the folder and say what it holds."""
    weights = os.path.join(folder, hf_layout.WEIGHTS_FILE)
    config = os.path.join(folder, hf_layout.CONFIG_FILE)
    if os.path.isfile(config):
        check_transformers_config(config)
    if os.path.isfile(weights):
        return weights
    held = sorted(os.listdir(folder))
    listing = ", ".join(held[:8]) + (", ..." if len(held) > 8 else "") if held else "nothing"
    if os.path.isfile(config):
        raise FileNotFoundError(f"transformers checkpoint {folder} has no {hf_layout.WEIGHTS_FILE} (it holds "
                                f"{listing}); the weights are read from that file only, the one save_pretrained "
                                "writes and the hub holds")
    raise IsADirectoryError(f"checkpoint {folder} is a directory, neither a .pth file nor a transformers checkpoint "
                            f"folder ({hf_layout.CONFIG_FILE} + {hf_layout.WEIGHTS_FILE}); it holds {listing}")


def check_transformers_config(path) -> None:
    """config.json must describe transformers' RT-DETR v1 (its "architectures"; a file without them passes)."""
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path}: {e}") from None
    architectures = config.get("architectures") if isinstance(config, dict) else None
    if architectures and hf_layout.ARCHITECTURE not in architectures:
        raise ValueError(f"{path} describes a transformers {', '.join(map(str, architectures))} (model_type "
                         f"{config.get('model_type')!r}), not RT-DETR v1 ({hf_layout.ARCHITECTURE}), the one "
                         "transformers model whose weights map onto this repo's")


def load_failure_reason(error: Exception) -> str:
    """torch.load's exception -> a short reason (without torch's advice to load untrusted files unsafely)."""
    text = str(error)
    unsafe = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if unsafe:
        return (f"it holds a pickled Python object ({unsafe.group(1)}), not only tensors and plain containers, so "
                "weights-only loading refuses it for safety; where it was made, save only the weights, e.g. "
                "torch.save({'model': model.state_dict()}, path)")
    unpickler = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", text, re.S)
    if unpickler:
        return f"not a valid checkpoint (unpickling failed: {unpickler.group(1).strip()}): corrupt, or not torch.save's"
    if isinstance(error, SafetensorError):
        return f"the file is truncated or corrupt ({text.strip()}); copy or download it again"
    if isinstance(error, EOFError) or "PytorchStreamReader" in text or "zip archive" in text:
        detail = text.split(". ")[0].replace("PytorchStreamReader failed reading zip archive: ", "")
        return f"the file is truncated or corrupt ({detail or 'unexpected end of file'}); copy or download it again"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(error).__name__}" + (f": {first}" if first else "")


# save_atomic's temp files: <name>.<random>.tmp next to <name> (a kill mid-save leaves one behind)
TEMP_PATTERN = "*.pth.*.tmp"


def remove_stale_temporaries(folder: str, log=print) -> list:
    """Delete the temp files of saves that were killed midway in `folder` (only one process
    writes a run's folder, so any found there are stale). Returns the removed paths."""
    removed = []
    for path in sorted(glob.glob(os.path.join(glob.escape(folder), TEMP_PATTERN))):
        try:
            size = os.path.getsize(path)
            os.remove(path)
        except OSError:
            continue
        removed.append(path)
        log(f"removed {path} ({size / 2**20:.1f} MB), left by an interrupted checkpoint save")
    return removed


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


def canonical_names(state):
    """A state dict with the names this repo's models use: without the `module.` prefix of a
    DistributedDataParallel save, and mapped from a foreign layout (layouts/) when it is in one."""
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    return to_our_layout(state)[0]


CLASS_HEAD = re.compile(r"(^|\.)(enc_score_head|dec_score_head|denoising_class_embed|classification_head)\.")


def is_class_head(name: str) -> bool:
    """Tensors whose shape follows num_classes (RT-DETR's score heads and denoising class embedding,
    SSD300's classification head): the ones fine-tuning re-initialises for another class set."""
    return CLASS_HEAD.search(name) is not None


def describe_architecture(state: dict) -> str:
    """What a state dict (in this repo's names) looks like, from its key names and shapes:
    e.g. 'RT-DETR R50, without FINE, 6 decoder layers, hidden dim 256, 80 classes'."""
    keys = list(state)
    if any(k.startswith("head.classification_head.") for k in keys):
        parts = ["SSD300"]
        cls = state.get("head.classification_head.module_list.0.weight")
        box = state.get("head.regression_head.module_list.0.weight")
        if cls is not None and box is not None and box.shape[0] % 4 == 0 and box.shape[0]:
            parts.append(f"{cls.shape[0] // (box.shape[0] // 4) - 1} classes")
    elif any(k.startswith("decoder.") for k in keys):
        parts = [f"RT-DETR {_backbone_name(keys)}", _alignment_name(keys)]
        layers = {m.group(1) for k in keys for m in [re.match(r"decoder\.decoder\.layers\.(\d+)\.", k)] if m}
        parts.append(f"{len(layers)} decoder layers")
        proj = state.get("decoder.enc_output.0.weight")
        if proj is not None:
            parts.append(f"hidden dim {proj.shape[0]}")
        head = state.get("decoder.enc_score_head.weight")
        if head is not None:
            parts.append(f"{head.shape[0]} classes")
    else:
        return f"not a detector of this repo ({len(keys)} tensors, e.g. {', '.join(keys[:3])})"
    if any(k.startswith("cross_layer.") for k in keys):
        parts.insert(1, "with CFSAM")
    if any(".skip." in k for k in keys):
        parts.insert(1, "any-depth")
    return ", ".join(parts)


# the hybrid encoder's alignment modules (rtdetr_fine/modules/), by a layer each adds under its authors' name
ALIGNMENT_KEYS = (("encoder.fine.", "FINE"), ("encoder.feature_align.", "FaPN"), ("encoder.ada_fpn_blocks.", "AdaFPN"),
                  ("encoder.mgc.", "MGC"))


def _alignment_name(keys) -> str:
    """'with FINE' (or FaPN, AdaFPN, MGC), or 'without FINE' for the official encoder."""
    found = [name for prefix, name in ALIGNMENT_KEYS if any(k.startswith(prefix) for k in keys)]
    return f"with {' + '.join(found)}" if found else "without FINE"


def _backbone_name(keys) -> str:
    """ResNet depth from the blocks per stage and the block type (backbone.ARCH), e.g. 'R50'."""
    blocks = {}
    bottleneck = False
    for k in keys:
        m = re.match(r"backbone\.res_layers\.(\d+)\.blocks\.(\d+)\.", k)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
            bottleneck |= ".branch2c." in k
    if not blocks:
        return _torchvision_resnet_name(keys)
    counts = [len(blocks[i]) for i in sorted(blocks)]
    kind = "bottleneck" if bottleneck else "basic"
    for depth, (arch_kind, arch_counts) in ARCH.items():
        if kind == arch_kind and counts == arch_counts[:len(counts)] and counts:
            return f"R{depth}"
    return f"ResNet with {kind} blocks {counts}" if counts else "without a ResNet backbone"


def _torchvision_resnet_name(keys) -> str:
    """'R50-ADN' / 'R101-ADN' from torchvision-style names (backbone.layer1.0.conv3: the any-depth authors'
    ResNet-ADN, rtdetr_fine/anydepth/resnet_adn.py)."""
    blocks = {}
    for k in keys:
        m = re.match(r"backbone\.layer(\d)\.(\d+)\.conv3\.", k)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    counts = [len(blocks[i]) for i in sorted(blocks)]
    depths = [d for d, (kind, arch) in ARCH.items() if kind == "bottleneck" and counts == arch]
    return f"R{depths[0]}-ADN" if depths else "without a ResNet backbone"


class CheckpointMismatchError(ValueError):
    """A checkpoint that does not fit the model. only_class_heads: the architecture fits and only the
    class heads differ (another num_classes); checkpoint_classes: the checkpoint's class count."""

    def __init__(self, message: str, only_class_heads: bool, checkpoint_classes):
        super().__init__(message)
        self.only_class_heads, self.checkpoint_classes = only_class_heads, checkpoint_classes


def _class_count(state: dict):
    head = state.get("decoder.enc_score_head.weight")
    if head is not None and head.dim() == 2:
        return int(head.shape[0])
    described = describe_architecture(state)
    m = re.search(r"(\d+) classes", described)
    return int(m.group(1)) if m else None


def load_weights(model, path, finetune=False, prefer_ema=True, log=print):
    """Load a checkpoint into `model`: a .pth file (ours, the official one, any layout in layouts/) or a
    transformers RT-DETR checkpoint (a save_pretrained folder or hub download, or its .safetensors file).

    strict (default): every name and shape must match. A mismatch is a CheckpointMismatchError that
    says what the checkpoint looks like next to what the config builds (backbone depth, FINE,
    decoder layers, classes; describe_architecture), or, when only the class heads differ, that
    num_classes differs.
    finetune=True: only the class heads may differ in shape (another class set: they keep their
    initialisation); tensors the checkpoint lacks (e.g. FINE on an official RT-DETR checkpoint)
    keep their initialisation; any other difference (another backbone, encoder or decoder) is refused
    with the same description, not skipped.
    Returns which weights were loaded ('ema', 'model' or 'state_dict'; a transformers file is a state dict).
    """
    try:
        state, which = extract_state_dict(read_checkpoint(path), prefer_ema)
    except ValueError as e:
        raise ValueError(str(e) if str(path) in str(e) else f"{path}: {e}") from None
    _check_tensors(path, which, state)
    try:
        state = canonical_names(state)
    except ValueError as e:   # a foreign layout that refuses what it holds (layouts/)
        raise ValueError(f"checkpoint {path}: {e}") from None
    own = model.state_dict()
    _check_weight_values(path, which, state, own)
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    unexpected = [k for k in state if k not in own and not k.endswith("num_batches_tracked")]
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    heads = [k for k in mismatched if is_class_head(k)]
    other = [k for k in mismatched if not is_class_head(k)]
    if finetune:
        if other or unexpected:
            raise _mismatch(path, which, state, own, other, unexpected, missing=[], finetune=True)
        if heads:
            log(f"fine-tuning from {path}: the class heads are re-initialised (the checkpoint has "
                f"{_class_count(state)} classes, the model {_class_count(own)}): {_modules_of(heads, shown=10)}")
        if missing:
            log(f"fine-tuning from {path}: {len(missing)} tensors not in the checkpoint keep their init "
                f"({_modules_of(missing)})")
        state = {k: v for k, v in state.items() if k in own and k not in heads}
        model.load_state_dict(state, strict=False)
        init_skip_norms_from_main(model, state, log)   # any-depth twins the checkpoint lacks: copies, not init
        return which
    older_anydepth = block0_twins_missing(state, missing)
    missing = [k for k in missing if k not in older_anydepth]
    if mismatched or unexpected or missing:
        raise _mismatch(path, which, state, own, mismatched, unexpected, missing, finetune=False)
    # num_batches_tracked may be absent in some exports, or present where the model's norms are frozen
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    if older_anydepth:
        log(f"{path}: an any-depth checkpoint from before the neck's RepVGG block 0 had twins (issue 22); "
            "it used block 0's main norms at every depth, so their twins start as copies of them")
        init_skip_norms_from_main(model, state, log)
    return which


def _check_tensors(path, which, state) -> None:
    """Every entry of the state dict is a tensor (a number or a string in its place is refused by name)."""
    wrong = [(k, v) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if wrong:
        k, v = wrong[0]
        raise ValueError(f"checkpoint {path} ({which}): {len(wrong)} entries are not tensors, e.g. '{k}' is a "
                         f"{type(v).__name__} ({str(v)[:40]}); not a state dict torch.save wrote from a model")


def _check_weight_values(path, which, state, own) -> None:
    """Weights the model keeps in floating point must come as floating point (an integer tensor would be cast
    without a word: not a checkpoint of this model) and be finite (NaN/inf: the run that wrote it diverged)."""
    integer, broken = bad_weight_values(state, own)
    if integer:
        raise ValueError(f"checkpoint {path} ({which}): {len(integer)} weights are stored as integers where the "
                         f"model has floating-point weights, e.g. '{integer[0]}' is {state[integer[0]].dtype} "
                         f"(the model's is {own[integer[0]].dtype}); they would be cast silently, so the file is "
                         "refused: it is not a checkpoint of this model")
    if broken:
        raise ValueError(f"checkpoint {path} ({which}): its weights are not finite: {len(broken)} tensors hold NaN "
                         f"or inf values, e.g. '{broken[0]}' ({_modules_of(broken)}); the training that wrote it "
                         "diverged: use an earlier checkpoint")


def _modules_of(names, shown=6) -> str:
    """'encoder.fine (40), ...': the modules (first two name parts) the tensors belong to, with counts."""
    counts = {}
    for k in names:
        module = ".".join(k.split(".")[:2])
        counts[module] = counts.get(module, 0) + 1
    listed = [f"{m} ({n})" for m, n in counts.items()]
    return ", ".join(listed[:shown]) + (" ..." if len(listed) > shown else "")


def _mismatch(path, which, state, own, mismatched, unexpected, missing, finetune):
    only_heads = bool(mismatched) and all(map(is_class_head, mismatched)) and not unexpected and not missing
    ckpt_classes = _class_count(state)
    if only_heads:
        message = (f"checkpoint {path} ({which}) has class heads for {ckpt_classes} classes, the config's model "
                   f"for {_class_count(own)}: check num_classes (or fine-tune with -t to re-initialise the heads)")
        return CheckpointMismatchError(message, True, ckpt_classes)
    lines = [f"checkpoint {path} ({which}) does not fit the model of this config"
             + (" (fine-tuning re-initialises only class heads of another class count)" if finetune else "") + ":",
             f"  the checkpoint looks like {describe_architecture(state)}",
             f"  the config builds        {describe_architecture(own)}"]
    if mismatched:
        lines.append(f"  {len(mismatched)} tensors differ in shape, e.g. " + "; ".join(
            f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched[:3]))
    if unexpected:
        lines.append(f"  {len(unexpected)} checkpoint tensors have no place in the model ({_modules_of(unexpected)})")
    if missing:
        lines.append(f"  {len(missing)} model tensors are not in the checkpoint ({_modules_of(missing)})"
                     + (" (any-depth skip norms: fine-tune from it with -t)" if any(".skip." in k for k in missing)
                        else ""))
    lines.append("  use the config the checkpoint was trained with (backbone.depth, fine.enabled, cross_layer, "
                 "encoder.alignment, decoder.num_decoder_layers, ...)")
    return CheckpointMismatchError("\n".join(lines), False, ckpt_classes)


# ---------------------------------------------------------------------------------------------
# The class set a run uses
# ---------------------------------------------------------------------------------------------

def recorded_class_set(path: str, num_classes) -> ClassSet | None:
    """The class set checkpoint `path` records, or None: none recorded (official or older
    checkpoints), or the config's num_classes (int or "auto") asks for another class count, in
    which case loading the weights reports the mismatch. Errors name the file."""
    classes = class_set_from_checkpoint(read_checkpoint(path), path)
    if classes is not None and num_classes not in (AUTO, classes.num_classes):
        return None
    return classes


def inference_class_set(cfg: dict, checkpoint: str | None = None) -> tuple:
    """(ClassSet, where it came from) for running a model: the class set checkpoint `checkpoint`
    records, else that of the config's annotation file (its val split), else COCO's 80 (when
    remap_mscoco_category or num_classes is 80), else label numbers. ValueError names the file."""
    if checkpoint:
        classes = recorded_class_set(checkpoint, cfg["num_classes"])
        if classes is not None:
            return classes, f"checkpoint {checkpoint}"
    ann_file = config_ann_file(cfg)
    if os.path.isfile(ann_file):
        categories = read_coco_json(ann_file)["categories"]
        return class_set_from_categories(categories, cfg["num_classes"], cfg["remap_mscoco_category"],
                                         ann_file), ann_file
    n = cfg["num_classes"]
    if n == AUTO:
        raise ValueError("num_classes is auto, but there is no class set to take it from: "
                         + ("the checkpoint records none and " if checkpoint else "")
                         + f"the config's annotation file {ann_file} is not there; give a train.py checkpoint, "
                         "the annotation file, or -u num_classes=N")
    if cfg["remap_mscoco_category"] or n == 80:
        return coco_class_set(n), "COCO's 80 categories"
    return ClassSet(n, tuple(range(n)), tuple(f"class {i}" for i in range(n))), "label numbers (no names known)"


# ---------------------------------------------------------------------------------------------
# The config a run uses: the one the checkpoint records, or a -c file checked against it
# ---------------------------------------------------------------------------------------------

# Sections of the config that describe the network, and, within them, the keys that do not decide it: what
# only training uses (dropout, denoising, the losses' auxiliary outputs, initialisation, freezing). The
# other keys decide the tensors or what the network computes with them in eval mode (e.g. fine.upsample,
# encoder.act, decoder.eval_idx): a config differing in one builds another model, or silently another
# function of the same weights. The data, the post-processing and the training recipe are left free.
MODEL_SECTIONS = ("detector", "cross_layer", "num_classes", "backbone", "encoder", "fine", "cfsam", "decoder",
                  "anydepth")
TRAINING_ONLY_KEYS = ("backbone.pretrained", "backbone.freeze_at", "backbone.freeze_norm", "encoder.dropout",
                      "cfsam.dropout", "decoder.dropout", "decoder.num_denoising", "decoder.label_noise_ratio",
                      "decoder.box_noise_scale", "decoder.aux_loss", "anydepth.distill", "anydepth.distill_weight_dict")


def model_keys() -> list:
    """The dotted config keys that decide the network (MODEL_SECTIONS without TRAINING_ONLY_KEYS)."""
    return [k for k in leaf_keys(DEFAULTS) if k.split(".")[0] in MODEL_SECTIONS
            and not any(k == t or k.startswith(t + ".") for t in TRAINING_ONLY_KEYS)]


def _decides_model(key: str, cfg: dict) -> bool:
    """Whether `key` takes part in the model `cfg` builds: SSD300 has no RT-DETR backbone, encoder or decoder;
    fine.* counts with fine.enabled, cfsam.* with cross_layer: cfsam, anydepth.* with anydepth.enabled."""
    section = key.split(".")[0]
    if cfg["detector"] == "ssd300" and section in ("backbone", "encoder", "fine", "decoder", "anydepth"):
        return False
    if section in ("fine", "anydepth") and key != f"{section}.enabled":
        return bool(cfg[section]["enabled"])
    if section == "cfsam":
        return cfg["cross_layer"] == "cfsam"
    return True


def _value(cfg: dict, key: str):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def config_differences(recorded: dict, given: dict) -> list:
    """[(key, recorded value, given value)] for the model keys (model_keys) on which two configs build
    different networks. num_classes 'auto' matches any count (it takes the checkpoint's class set)."""
    differences = []
    for key in model_keys():
        if not (_decides_model(key, recorded) and _decides_model(key, given)):
            continue
        a, b = _value(recorded, key), _value(given, key)
        if key == "num_classes" and "auto" in (a, b):
            continue
        if a != b:
            differences.append((key, a, b))
    return differences


def recorded_config(path) -> dict | None:
    """The resolved config train.py recorded in checkpoint `path` ('config'), or None (an official or
    transformers checkpoint, a bare state dict). Errors name the file."""
    ckpt = read_checkpoint(path)
    config = ckpt.get("config") if isinstance(ckpt, dict) else None
    return config if isinstance(config, dict) else None


def checkpoint_config(path, overrides=()) -> dict:
    """The config checkpoint `path` records, with the "dotted.key=value" overrides on top (config_from_dict).
    A checkpoint without one (official, Hugging Face, a bare state dict) is a ConfigError asking for -c."""
    recorded = recorded_config(path)
    if recorded is None:
        raise ConfigError(f"checkpoint {path} records no config (an official or Hugging Face checkpoint, or a bare "
                          "state dict, holds weights only): give the config that builds its model with -c CONFIG "
                          "(docs/training.md lists the configs of the official and hub checkpoints)")
    try:
        return config_from_dict(recorded, f"the config recorded in checkpoint {path}", overrides)
    except ConfigError as e:
        raise ConfigError(f"{e} (give a config with -c CONFIG to use that instead)") from None


class ConfigMismatchError(ValueError):
    """A -c config that builds another network than the one a checkpoint was trained as."""


def config_for_checkpoint(config: str | None, checkpoint: str | None, overrides=()) -> tuple:
    """(config, where it came from: the file or 'recorded in CHECKPOINT') to run the weights of `checkpoint`
    with: the -c file `config` with the overrides, checked against the checkpoint (check_config_fits), or
    without one the config the checkpoint records (checkpoint_config; the overrides apply on top)."""
    if config is None:
        if checkpoint is None:
            raise ConfigError("no config: give -c CONFIG, or -r CKPT with a train.py checkpoint (whose recorded "
                              "config is then used)")
        return checkpoint_config(checkpoint, overrides), f"recorded in {checkpoint}"
    cfg = load_config(config, overrides)
    if checkpoint:
        check_config_fits(cfg, config, checkpoint, overrides)
    return cfg, config


def check_config_fits(cfg: dict, config: str, checkpoint: str, overrides=()) -> None:
    """A ConfigMismatchError naming each differing key (config_differences: architecture, FINE, decoder layers,
    class count, ...) when `cfg`, loaded from the -c file `config` with the overrides, builds another network
    than the config `checkpoint` records, with the same overrides (so an override never counts as a
    difference). A checkpoint that records no config (or one that no longer validates) is not compared:
    loading the weights still checks every tensor's name and shape."""
    recorded = recorded_config(checkpoint)
    if recorded is None:
        return
    try:
        own = config_from_dict(recorded, f"the config recorded in checkpoint {checkpoint}", overrides)
    except ConfigError:
        return
    differences = config_differences(own, cfg)
    if differences:
        lines = [f"config {config} builds another model than checkpoint {checkpoint} was trained as "
                 f"({len(differences)} config key(s) differ):"]
        lines += [f"  {key}: {a!r} in the checkpoint's config, {b!r} in {config}" for key, a, b in differences]
        lines.append(f"leave out -c to use the config {checkpoint} records (-u overrides still apply), or give "
                     "the config it was trained with")
        raise ConfigMismatchError("\n".join(lines))
