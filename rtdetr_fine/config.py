"""YAML configs: defaults below, then `__include__`d files, then the file, then `-u key=value` overrides.

Every key a config may set is listed in DEFAULTS with its default value; a key that is
not there is an error naming it (a typo must not be silently ignored). The loaded
config is a plain nested dict: what builds what is in `rtdetr_fine/build.py`.
"""
import copy
import os
import re

import yaml

COCO_MULTI_SCALES = [480, 512, 544, 576, 608, 640, 640, 640, 672, 704, 736, 768, 800]

DETECTORS = ("rtdetr", "ssd300")
CROSS_LAYER_MODULES = ("cfsam",)
OPTIMIZERS = ("AdamW", "SGD")

DEFAULTS = {
    "detector": "rtdetr",             # rtdetr | ssd300 (torchvision's SSD300; uses the `ssd` section)
    "cross_layer": None,              # null | cfsam: on the maps the head reads (RT-DETR: the encoder's 3, SSD300: 6)
    "num_classes": "auto",            # object classes; auto: from the training annotation file (rtdetr_fine/classes.py)
    "remap_mscoco_category": False,   # true: COCO's official ids (1..90) <-> labels 0..79 (the COCO configs)
    "epochs": 12,                     # 1x schedule
    "output_dir": "output/run",
    "seed": 0,
    "backbone": {
        "depth": 50, "variant": "d", "num_stages": 4, "return_idx": [1, 2, 3],
        "freeze_at": 0, "freeze_norm": True,
        "pretrained": None,           # null | true (official URL) | local path | URL (SSD300: VGG16 weights)
    },
    "encoder": {
        "in_channels": [512, 1024, 2048], "feat_strides": [8, 16, 32], "hidden_dim": 256,
        "use_encoder_idx": [2], "num_encoder_layers": 1, "nhead": 8, "dim_feedforward": 1024,
        "dropout": 0.0, "enc_act": "gelu", "pe_temperature": 10000, "expansion": 1.0,
        "depth_mult": 1.0, "act": "silu",
    },
    "fine": {
        "enabled": False,
        "attention": "linear_bottleneck",   # quadratic | linear | linear_bottleneck
        "modulation": "multiply",           # multiply (Eq. 8) | residual (revised FINE)
        "num_heads": 16, "ffn_ratio": 4,    # the FINE authors' RT-DETR modules: 16 heads of 16 channels
        "upsample": "bilinear",             # F_{l+1} before the fusion: bilinear (the authors' RT-DETR) | nearest
    },
    "cfsam": {                        # CFSAM (rtdetr_fine/cfsam.py) when cross_layer: cfsam
        "hidden_dim": 256, "num_layers": 3, "num_heads": 8, "dim_feedforward": 512, "parts": 2, "dropout": 0.0,
    },
    "ssd": {                          # detector: ssd300 (torchvision's defaults)
        "iou_thresh": 0.5, "positive_fraction": 0.25,          # matching; hard negatives 3:1
        "weight_dict": {"loss_loc": 1.0, "loss_conf": 1.0},
        "score_thresh": 0.01, "nms_thresh": 0.45, "topk_candidates": 400, "detections_per_img": 200,
    },
    "anydepth": {                       # any-depth RT-DETR (rtdetr_fine/anydepth.py); depth chosen at inference
        "enabled": False,
        "min_decoder_layers": None,     # decoder layers of the `min` depth; null = all the full model runs
        "distill": True,                # train full + min by self-distillation (rtdetr_fine/distill.py); false: full only
        "distill_weight_dict": {        # the min network's alignment terms (authors' weights)
            "loss_kd_class": 1.0, "loss_kd_bbox": 5.0, "loss_kd_giou": 2.0,
            "loss_kd_feat_backbone": 1.0, "loss_kd_feat_encoder": 1.0,
        },
    },
    "decoder": {
        "hidden_dim": 256, "num_queries": 300, "feat_channels": [256, 256, 256],
        "num_levels": 3, "num_decoder_points": 4, "nhead": 8, "num_decoder_layers": 6,
        "dim_feedforward": 1024, "dropout": 0.0, "activation": "relu", "num_denoising": 100,
        "label_noise_ratio": 0.5, "box_noise_scale": 1.0, "learnt_init_query": False,
        "eval_idx": -1, "eps": 0.01, "aux_loss": True,
    },
    "criterion": {
        "weight_dict": {"loss_vfl": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0},
        "losses": ["vfl", "boxes"], "alpha": 0.75, "gamma": 2.0,
        "matcher": {"cost_class": 2.0, "cost_bbox": 5.0, "cost_giou": 2.0, "alpha": 0.25, "gamma": 2.0},
    },
    "postprocessor": {"num_top_queries": 300},
    "train_dataloader": {
        "dataset": {"img_folder": "data/coco/train2017", "ann_file": "data/coco/annotations/instances_train2017.json",
                    "exif_transpose": False},   # COCO boxes refer to the stored pixels: EXIF orientation not applied
        "total_batch_size": 16,       # the recipe's batch over all processes (the official 4 GPUs x 4)
        "batch_size": None,           # per process; when set, it overrides total_batch_size
        "num_workers": 4,
        "image_size": 640,
        "multi_scale": COCO_MULTI_SCALES,   # per-batch sizes; [] disables
        "no_aug_epochs": 0,           # strong augmentation and multi-scale off for the last N epochs (official: 0)
    },
    "val_dataloader": {
        "dataset": {"img_folder": "data/coco/val2017", "ann_file": "data/coco/annotations/instances_val2017.json",
                    "exif_transpose": False},
        "batch_size": 8, "num_workers": 4, "image_size": 640,
    },
    "optimizer": {
        "type": "AdamW",              # AdamW | SGD
        "momentum": 0.9,              # SGD only
        "lr": 1.0e-4, "weight_decay": 1.0e-4, "betas": [0.9, 0.999],
        # Parameter groups as the official RT-DETR YAMLs define them: a regex matched (re.search) on
        # each trainable parameter's name, with the group's lr / weight_decay (default: the values
        # above); names no group matches form the last group. A name in two groups is an error.
        # Default: the official include/optimizer.yml (R50); the R18 config sets its own.
        "params": [
            {"params": "backbone", "lr": 1.0e-5},
            {"params": "^(?=.*encoder(?=.*bias|.*norm.*weight)).*$", "weight_decay": 0.0},
            {"params": "^(?=.*decoder(?=.*bias|.*norm.*weight)).*$", "weight_decay": 0.0},
        ],
        "clip_max_norm": 0.1, "warmup_iters": 2000,
        "lr_milestones": [],          # epochs at which lr is multiplied by lr_gamma (official: none reached)
        "lr_gamma": 0.1,
    },
    "ema": {"enabled": True, "decay": 0.9999, "warmups": 2000},
    "amp": {"dtype": "bfloat16"},     # used with --amp on CUDA: bfloat16 | float16 (with a grad scaler)
    "sync_bn": True,                  # SyncBatchNorm under DDP on GPUs (the official recipe)
    "find_unused_parameters": True,
    "log_every": 20,
    "demo": {"enabled": False, "root": "data/demo_shapes", "num_train": 200, "num_val": 50, "image_size": 320},
}

# Keys whose value is a mapping with free-form entries (not validated key by key).
FREE_FORM = {"criterion.weight_dict"}
# Keys that take a positive integer or the string "auto".
INT_OR_AUTO = {"num_classes"}

# Keys of earlier versions, with what replaces them.
REMOVED_KEYS = {
    "optimizer.backbone_lr": "give the backbone's lr in optimizer.params, e.g. {params: backbone, lr: 1.0e-5}",
    "checkpoint_freq": "every epoch writes last.pth (and best.pth when the AP improves); nothing else is saved",
    "decoder.feat_strides": "the decoder takes the encoder's maps as they come (encoder.feat_strides)",
}
OPTIMIZER_GROUP_KEYS = {"params", "lr", "weight_decay"}


class ConfigError(ValueError):
    pass


def load_config(path: str, overrides=()) -> dict:
    """Load a YAML config with includes and "dotted.key=value" overrides; validate every key."""
    cfg = copy.deepcopy(DEFAULTS)
    _merge(cfg, _read_with_includes(path, seen=()), source=path)
    for item in overrides:
        _merge(cfg, _parse_override(item), source=f"override {item!r}")
    _validate_choices(cfg, path)
    return cfg


def _read_with_includes(path, seen):
    path = os.path.abspath(path)
    if path in seen:
        raise ConfigError(f"{path}: include cycle through {' -> '.join(seen)}")
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path) as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    merged = {}
    includes = data.pop("__include__", [])
    for inc in [includes] if isinstance(includes, str) else includes:
        inc_path = os.path.join(os.path.dirname(path), inc)
        _merge_raw(merged, _read_with_includes(inc_path, seen + (path,)))
    _merge_raw(merged, data)
    return merged


def _merge_raw(dst, src):
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge_raw(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)


def _merge(dst, src, source, prefix=""):
    """Merge src into dst, refusing keys that the defaults do not have."""
    for k, v in src.items():
        key = prefix + k
        if k not in dst:
            if key in REMOVED_KEYS:
                raise ConfigError(f"{source}: config key '{key}' no longer exists: {REMOVED_KEYS[key]}")
            known = ", ".join(sorted(dst)) if prefix else "see DEFAULTS in rtdetr_fine/config.py"
            raise ConfigError(f"{source}: unknown config key '{key}' (known here: {known})")
        if isinstance(dst[k], dict) and key not in FREE_FORM:
            if not isinstance(v, dict):
                raise ConfigError(f"{source}: config key '{key}' must be a mapping, got {v!r}")
            _merge(dst[k], v, source, key + ".")
        elif key in INT_OR_AUTO:
            if v != "auto" and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"{source}: config key '{key}' expects a positive integer or auto, got {v!r}")
            dst[k] = v
        else:
            dst[k] = _checked_value(key, dst[k], v, source)


def _checked_value(key, default, value, source):
    if default is None or value is None:
        return value
    if isinstance(default, bool) != isinstance(value, bool):
        raise ConfigError(f"{source}: config key '{key}' expects a boolean-like {type(default).__name__}, got {value!r}")
    if isinstance(default, (int, float)) and not isinstance(value, (int, float)):
        raise ConfigError(f"{source}: config key '{key}' expects a number, got {value!r}")
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if isinstance(default, list) and not isinstance(value, list):
        raise ConfigError(f"{source}: config key '{key}' expects a list, got {value!r}")
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{source}: config key '{key}' expects a string, got {value!r}")
    return copy.deepcopy(value)


def _parse_override(item):
    """'a.b.c=value' -> {'a': {'b': {'c': yaml(value)}}}."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like dotted.key=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    out = value
    for part in reversed(key.strip().split(".")):
        out = {part: out}
    return out


def _validate_choices(cfg, path):
    from .fine import ATTENTION_MODES, MODULATIONS
    fine = cfg["fine"]
    if fine["attention"] not in ATTENTION_MODES:
        raise ConfigError(f"{path}: fine.attention must be one of {ATTENTION_MODES}, got {fine['attention']!r}")
    if fine["modulation"] not in MODULATIONS:
        raise ConfigError(f"{path}: fine.modulation must be one of {MODULATIONS}, got {fine['modulation']!r}")
    if fine["upsample"] not in ("nearest", "bilinear"):
        raise ConfigError(f"{path}: fine.upsample must be nearest or bilinear, got {fine['upsample']!r}")
    _validate_batch_sizes(cfg, path)
    _validate_optimizer_groups(cfg["optimizer"]["params"], path)
    if cfg["detector"] not in DETECTORS:
        raise ConfigError(f"{path}: detector must be one of {DETECTORS}, got {cfg['detector']!r}")
    if cfg["cross_layer"] is not None and cfg["cross_layer"] not in CROSS_LAYER_MODULES:
        raise ConfigError(f"{path}: cross_layer must be null or one of {CROSS_LAYER_MODULES}, "
                          f"got {cfg['cross_layer']!r}")
    if cfg["cross_layer"] is not None and fine["enabled"]:
        raise ConfigError(f"{path}: cross_layer: {cfg['cross_layer']} and fine.enabled: true exclude each other "
                          "(both refine the multi-scale maps); switch one of them off")
    if cfg["detector"] != "rtdetr" and fine["enabled"]:
        raise ConfigError(f"{path}: fine.enabled: true needs detector: rtdetr (FINE lives in RT-DETR's "
                          f"hybrid encoder), got detector: {cfg['detector']}")
    if cfg["optimizer"]["type"] not in OPTIMIZERS:
        raise ConfigError(f"{path}: optimizer.type must be one of {OPTIMIZERS}, got {cfg['optimizer']['type']!r}")
    anydepth = cfg["anydepth"]
    if anydepth["min_decoder_layers"] is not None and (
            isinstance(anydepth["min_decoder_layers"], bool) or not isinstance(anydepth["min_decoder_layers"], int)
            or not 1 <= anydepth["min_decoder_layers"] <= cfg["decoder"]["num_decoder_layers"]):
        raise ConfigError(f"{path}: anydepth.min_decoder_layers must be null or a number of layers from 1 to "
                          f"decoder.num_decoder_layers={cfg['decoder']['num_decoder_layers']}, "
                          f"got {anydepth['min_decoder_layers']!r}")
    if anydepth["enabled"] and cfg["detector"] != "rtdetr":
        raise ConfigError(f"{path}: anydepth.enabled: true needs detector: rtdetr, got detector: {cfg['detector']}")
    if cfg["amp"]["dtype"] not in ("bfloat16", "float16"):
        raise ConfigError(f"{path}: amp.dtype must be bfloat16 or float16, got {cfg['amp']['dtype']!r}")


def _is_positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _validate_batch_sizes(cfg, path):
    t = cfg["train_dataloader"]
    if not _is_positive_int(t["total_batch_size"]):
        raise ConfigError(f"{path}: train_dataloader.total_batch_size must be a positive integer, "
                          f"got {t['total_batch_size']!r}")
    if t["batch_size"] is not None and not _is_positive_int(t["batch_size"]):
        raise ConfigError(f"{path}: train_dataloader.batch_size (per process) must be a positive integer or null, "
                          f"got {t['batch_size']!r}")


def _validate_optimizer_groups(groups, path):
    """optimizer.params: [{params: regex, lr?: number, weight_decay?: number}, ...]."""
    for i, group in enumerate(groups):
        where = f"{path}: optimizer.params[{i}]"
        if not isinstance(group, dict) or not isinstance(group.get("params"), str):
            raise ConfigError(f"{where} must be a mapping with a regex string 'params', got {group!r}")
        unknown = set(group) - OPTIMIZER_GROUP_KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)} (allowed: {sorted(OPTIMIZER_GROUP_KEYS)})")
        for key in ("lr", "weight_decay"):
            value = group.get(key, 0.0)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"{where}.{key} must be a non-negative number, got {value!r}")
        try:
            re.compile(group["params"])
        except re.error as e:
            raise ConfigError(f"{where}.params is not a valid regex: {group['params']!r} ({e})") from None


def dump_config(cfg):
    return yaml.safe_dump(cfg, sort_keys=False)
