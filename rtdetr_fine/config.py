"""YAML configs: defaults below, then `__include__`d files, then the file, then `-u key=value` overrides.

Every key a config may set is listed in DEFAULTS with its default value; a key that is
not there is an error naming it (a typo must not be silently ignored). Every value is
checked when the config is loaded (type and range: RULES; keys that depend on each other:
_validate_combinations), and an error names the key and where the value came from (the
file, an included file, or `override 'key=value'`). The loaded config is a plain nested
dict: what builds what is in `rtdetr_fine/build.py`.
"""
import copy
import math
import os
import re

import regex
import yaml

COCO_MULTI_SCALES = [480, 512, 544, 576, 608, 640, 640, 640, 672, 704, 736, 768, 800]

DETECTORS = ("rtdetr", "ssd300")
CROSS_LAYER_MODULES = ("cfsam",)
EVAL_METRICS = ("coco", "voc07", "voc")   # evaluator.metric (rtdetr_fine/evaluation/metric.py)
ALIGNMENTS = ("fine", "fapn", "adafpn", "mgc")   # encoder.alignment: rtdetr_fine/modules/, build.build_alignment
OPTIMIZERS = ("AdamW", "SGD")

DEFAULTS = {
    "detector": "rtdetr",             # rtdetr | ssd300 (torchvision's SSD300; uses the `ssd` section)
    "cross_layer": None,              # null | cfsam: on the maps the head reads (RT-DETR: the encoder's 3, SSD300: 6)
    "num_classes": "auto",            # object classes; auto: from the training annotation file (rtdetr_fine/data/classes.py)
    "remap_mscoco_category": False,   # true: COCO's official ids (1..90) <-> labels 0..79 (the COCO configs)
    "epochs": 12,                     # 1x schedule
    "output_dir": "output/run",
    "seed": 0,
    "backbone": {
        "type": "presnet",            # presnet (official ResNet-vd) | resnet_adn (the any-depth authors' ResNet-D)
        "depth": 50, "variant": "d", "num_stages": 4, "return_idx": [1, 2, 3],
        "freeze_at": 0, "freeze_norm": True,
        "pretrained": None,           # null | true (official URL) | local path | URL (SSD300: VGG16 weights)
    },
    "encoder": {
        "in_channels": [512, 1024, 2048], "feat_strides": [8, 16, 32], "hidden_dim": 256,
        "use_encoder_idx": [2], "num_encoder_layers": 1, "nhead": 8, "dim_feedforward": 1024,
        "dropout": 0.0, "enc_act": "gelu", "pe_temperature": 10000, "expansion": 1.0,
        "depth_mult": 1.0, "act": "silu",
        "alignment": None,            # null | fine (= fine.enabled: true) | fapn | adafpn | mgc (FINE paper, Table 2)
    },
    "fine": {
        "enabled": False,
        "attention": "linear_bottleneck",   # quadratic | linear | linear_bottleneck
        "modulation": "multiply",           # multiply (Eq. 8) | residual (revised FINE)
        "num_heads": 16, "ffn_ratio": 4,    # the FINE authors' RT-DETR modules: 16 heads of 16 channels
        "upsample": "bilinear",             # F_{l+1} before the fusion: bilinear (the authors' RT-DETR) | nearest
    },
    "cfsam": {                        # CFSAM (rtdetr_fine/modules/cfsam.py) when cross_layer: cfsam
        "hidden_dim": 256, "num_layers": 3, "num_heads": 8, "dim_feedforward": 512, "parts": 2, "dropout": 0.0,
        "components": "full",         # full | lfe_gfe | lfe: the CFSAM paper's Table 5 rows (modules/cfsam.py)
        "maps": None,                 # null: every map; [i, ...]: only these maps (Table 6), the others pass through
    },
    "ssd": {                          # detector: ssd300 (torchvision's defaults)
        "iou_thresh": 0.5, "positive_fraction": 0.25,          # matching; hard negatives 3:1
        "weight_dict": {"loss_loc": 1.0, "loss_conf": 1.0},
        "score_thresh": 0.01, "nms_thresh": 0.45, "topk_candidates": 400, "detections_per_img": 200,
        "fc_init": "random",          # reduced_vgg16 (the SSD paper) | random: fc6/fc7 when backbone.pretrained loads VGG16
    },
    "anydepth": {                       # any-depth RT-DETR (rtdetr_fine/anydepth/convert.py); depth chosen at inference
        "enabled": False,
        "min_decoder_layers": None,     # decoder layers of the `min` depth; null = all the full model runs
        "distill": True,                # train full + min by self-distillation (rtdetr_fine/anydepth/distill.py); false: full only
        "distill_weight_dict": {        # the min network's alignment terms (authors' weights)
            "loss_kd_class": 1.0, "loss_kd_bbox": 5.0, "loss_kd_giou": 2.0,
            "loss_kd_feat_backbone": 1.0, "loss_kd_feat_encoder": 1.0,
        },
        "distill_reduction": "plain",   # plain: class KL per pair | authors: (queries / classes) x KL (docs/anydepth.md)
        "independent_scales": False,    # true: full and min each see their own multi-scale size (the authors')
        "twins_of_frozen_norms": "trainable",   # twin of a FrozenBatchNorm2d: trainable BatchNorm2d | frozen (authors')
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
    "evaluator": {"metric": "coco"},  # coco | voc07 | voc: eval.py's default --metric and what picks train.py's best.pth
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

# Keys whose value is a mapping with free-form entries (not validated key by key when merging; their rule
# in RULES checks them). A file or override merges into the mapping it replaces.
FREE_FORM = {"criterion.weight_dict"}
# Keys that take a positive integer or the string "auto".
INT_OR_AUTO = {"num_classes"}
# Keys that take an integer (square) or [height, width] (their rule in RULES checks them).
INT_OR_PAIR = {"train_dataloader.image_size", "val_dataloader.image_size"}
# Keys only one detector family reads (build.py): set on the other family they would be silently ignored.
# SSD300 reads backbone.pretrained only; RT-DETR never reads `ssd`.
FAMILY_KEYS = {
    "rtdetr": ("backbone.type", "backbone.depth", "backbone.variant", "backbone.num_stages", "backbone.return_idx",
               "backbone.freeze_at", "backbone.freeze_norm", "encoder.", "fine.", "decoder.", "criterion.",
               "postprocessor.", "anydepth."),
    "ssd300": ("ssd.",),
}
FAMILY_NAMES = {"rtdetr": "RT-DETR", "ssd300": "SSD300"}


def family_of_key(key: str) -> str | None:
    """The detector family that alone reads the dotted `key` (FAMILY_KEYS), or None for a key both read."""
    return next((family for family, prefixes in FAMILY_KEYS.items() if key.startswith(prefixes)), None)

# Keys of earlier versions, with what replaces them.
REMOVED_KEYS = {
    "optimizer.backbone_lr": "give the backbone's lr in optimizer.params, e.g. {params: backbone, lr: 1.0e-5}",
    "checkpoint_freq": "every epoch writes last.pth (and best.pth when the AP improves); nothing else is saved",
    "decoder.feat_strides": "the decoder takes the encoder's maps as they come (encoder.feat_strides)",
}
OPTIMIZER_GROUP_KEYS = {"params", "lr", "weight_decay"}
ACTIVATIONS = ("relu", "silu", "gelu")                       # rtdetr_fine/nn/layers.py get_activation
CRITERION_LOSSES = {"vfl": ("loss_vfl",), "boxes": ("loss_bbox", "loss_giou")}   # rtdetr_fine/rtdetr/criterion.py
RTDETR_SIZE_DIVISIBILITY = 32                                # the coarsest feature stride (deploy.size_divisibility)
# Upper bounds of the size-like keys: generous (far above any published recipe), but finite, so that
# `num_classes=10**12` is a config error naming the key, not an allocation error deep in torch.
MAX_CLASSES = 100_000          # LVIS has 1,203 categories
MAX_QUERIES = 10_000           # decoder.num_queries, decoder.num_denoising (RT-DETR: 300, 100; DINO: 900)
MAX_DETECTIONS = 100_000       # postprocessor.num_top_queries, ssd.topk_candidates / detections_per_img
MAX_CHANNELS = 16_384          # hidden dims and input channels (RT-DETR: 256; ResNet's widest map: 2048)
MAX_FEEDFORWARD = 65_536       # dim_feedforward
MAX_HEADS = 1_024
MAX_LAYERS = 100               # encoder / decoder / CFSAM layers (RT-DETR: 1 / 6)
MAX_IMAGE_SIDE = 8_192         # px, each side of image_size, multi_scale entries and demo.image_size
MAX_BATCH = 4_096              # images per batch
MAX_WORKERS = 256              # DataLoader processes
MAX_EPOCHS = 100_000
MAX_ITERATIONS = 10**9         # warmup_iters, ema.warmups, log_every
MAX_DEMO_IMAGES = 100_000
MAX_SEED = 2**63 - 1           # what torch.manual_seed takes


class ConfigError(ValueError):
    pass


# ---------------------------------------------------------------- reading YAML

class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's floats: `1e-4` and `5E3` are numbers, as every YAML 1.2 reader
    and Python see them (PyYAML follows YAML 1.1, which reads them as strings: `optimizer.lr=1e-4`
    would then be refused as not a number)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._key_path, self._open_anchors = [], []   # the keys and anchors of the values being composed
        self._composed = 0                              # values composed so far (aliases not expanded)

    def compose_node(self, parent, index):
        """yaml's Composer.compose_node, refusing self-referencing aliases and nesting deeper than MAX_YAML_DEPTH."""
        path = self._key_path + ([] if index is None or parent is None else [_node_name(index)])
        if self.check_event(yaml.AliasEvent):
            anchor = self.peek_event().anchor
            if anchor in self._open_anchors:
                raise YamlLimitError(f"key '{_dotted(path)}' refers to itself (alias *{anchor} inside the value "
                                     f"anchored &{anchor}); a config value cannot contain itself")
            return yaml.SafeLoader.compose_node(self, parent, index)
        if len(self._open_anchors) >= MAX_YAML_DEPTH:
            raise YamlLimitError(f"key '{_dotted(path[:4])}...' is nested more than {MAX_YAML_DEPTH} levels deep "
                                 "(a config nests a few levels)")
        self._composed += 1
        if self._composed > MAX_YAML_VALUES:   # stop reading a huge document early (not after building it)
            raise YamlLimitError(f"the document holds more than the {MAX_YAML_VALUES} values a config may hold "
                                 f"(reading stopped at key '{_dotted(path)}')")
        anchor = self.peek_event().anchor
        saved = self._key_path
        self._key_path = path
        self._open_anchors.append(anchor)
        try:
            return yaml.SafeLoader.compose_node(self, parent, index)
        finally:
            self._open_anchors.pop()
            self._key_path = saved

    def compose_document(self):
        root = super().compose_document()
        _check_expanded_size(root)
        return root


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))

# A config is small (the largest here has a few hundred values, nested 4 deep). These bounds keep a
# hostile file from hanging or crashing the reader: an alias bomb ("billion laughs": aliases of
# aliases) is refused by the number of values it expands to, before anything walks it; nesting deeper
# than MAX_YAML_DEPTH is refused before Python's recursion limit is reached; an alias inside the
# value it names (`fine: &f {attention: *f}`) is refused by name instead of building a cyclic dict.
MAX_YAML_DEPTH = 32
MAX_YAML_VALUES = 10_000


class YamlLimitError(ValueError):
    """A YAML document beyond the bounds above (the reader adds the file or override)."""


def _node_name(index):
    """A mapping value's key node -> its text; a list position -> [i]."""
    return f"[{index}]" if isinstance(index, int) else str(getattr(index, "value", index))


def _dotted(path):
    return ".".join(path).replace(".[", "[") or "(top level)"


def _expanded_size(node, memo):
    """How many values `node` holds once its aliases are expanded (each alias counts what it names)."""
    if id(node) not in memo:
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = []
        memo[id(node)] = 1 + sum(_expanded_size(c, memo) for c in children)
    return memo[id(node)]


def _check_expanded_size(root):
    memo = {}
    total = _expanded_size(root, memo)
    if total <= MAX_YAML_VALUES:
        return
    biggest = ""
    if isinstance(root, yaml.MappingNode) and root.value:
        key, value = max(root.value, key=lambda pair: _expanded_size(pair[1], memo))
        biggest = f"; key '{_node_name(key)}' alone holds {_expanded_size(value, memo)}"
    raise YamlLimitError(f"the document expands (through its YAML aliases) to {total} values, more than the "
                         f"{MAX_YAML_VALUES} a config may hold{biggest}")


def image_hw(size) -> tuple:
    """An image_size value (S, or [H, W]) -> (H, W)."""
    return (size, size) if isinstance(size, int) else tuple(size)


def _yaml_load(stream, key_path=()):
    """yaml.load with _Loader; key_path: the dotted key the document is the value of (an override's)."""
    loader = _Loader(stream)
    loader._key_path = list(key_path)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_config(path: str, overrides=()) -> dict:
    """Load a YAML config with includes and "dotted.key=value" overrides; validate every key.

    Errors are ConfigErrors that name the key and where its value came from: the file that set it
    (an included one too), or `override 'key=value'`.
    """
    sources = {}
    data = _read_with_includes(path, seen=(), sources=sources)
    return _resolve(data, sources, path, overrides)


def config_files(path: str | None, what: str = "-c") -> list:
    """[(what, file)] of a YAML config and of every file it __include__s (recursively; labelled
    "config include"), as load_config reads them: the inputs an entry point's outputs must stay apart
    from (cli.check_outputs_apart). [] for no config. Errors as load_config's."""
    if not path:
        return []
    files = []
    _read_with_includes(path, seen=(), sources={}, files=files)
    return [(what if i == 0 else "config include", file) for i, file in enumerate(files)]


def config_from_dict(data: dict, source: str, overrides=()) -> dict:
    """A config recorded as a mapping (the resolved config a train.py checkpoint holds) -> the config
    load_config would give for a file holding it: merged over DEFAULTS (a key it lacks, e.g. one added
    since, takes its default), then the "dotted.key=value" overrides, every value checked. Errors are
    ConfigErrors naming the key and `source` (e.g. "checkpoint run/last.pth") or the override."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the recorded config is a {type(data).__name__}, not a mapping of config keys")
    sources = {}
    _record_sources(data, source, sources)
    return _resolve(copy.deepcopy(data), sources, source, overrides)


def override_keys(overrides) -> list:
    """The dotted keys that "dotted.key=value" overrides set, in order (e.g. ['output_dir', 'optimizer.lr'])."""
    return [item.split("=", 1)[0].strip() for item in overrides if isinstance(item, str) and "=" in item]


def _resolve(data, sources, path, overrides):
    """DEFAULTS <- data (read from `path`) <- overrides, validated; sources[key] says where each value came from."""
    cfg = copy.deepcopy(DEFAULTS)
    _merge(cfg, data, lambda key: _source_of(sources, key, path))
    for item in overrides:
        source = f"override {item!r}"
        data = _parse_override(item, source)
        _record_sources(data, source, sources)
        _merge(cfg, data, lambda key, source=source: source)
    _validate(cfg, lambda *keys: _blame(sources, keys, path))
    return cfg


def _read_with_includes(path, seen, sources, included_from=None, files=None):
    """The merged mapping of the YAML file at `path` and its __include__s (theirs first, the file's own
    keys over them); sources[key] records the file that set each key, `files` (a list) every file read,
    in the order they were opened."""
    path = os.path.abspath(path)
    where = f" (included from {included_from})" if included_from else ""
    if path in seen:
        raise ConfigError(f"{path}: include cycle through {' -> '.join(seen)}")
    if len(seen) >= MAX_YAML_DEPTH:
        raise ConfigError(f"{path}{where}: __include__s nested more than {MAX_YAML_DEPTH} files deep")
    if os.path.isdir(path):
        raise ConfigError(f"config {path}{where} is a directory, not a YAML file")
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}{where}")
    try:
        with open(path, encoding="utf-8") as f:
            data = _yaml_load(f)
    except YamlLimitError as e:
        raise ConfigError(f"{path}{where}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"cannot read config {path}{where}: {e.strerror or e}") from None
    if files is not None and path not in files:
        files.append(path)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of config keys, got a {type(data).__name__}")
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(f"{path}: config keys are names, got {key!r}")
    merged = {}
    includes = data.pop("__include__", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) and i for i in includes):
        raise ConfigError(f"{path}: __include__ must be a file name or a list of them, got {includes!r}")
    for inc in includes:
        inc_path = os.path.join(os.path.dirname(path), inc)
        _merge_raw(merged, _read_with_includes(inc_path, seen + (path,), sources, included_from=path, files=files))
    _record_sources(data, path, sources)
    _merge_raw(merged, data)
    return merged


def _record_sources(data, source, sources, prefix=""):
    """sources[dotted key] = where its value was set, for every key (and sub-key) of `data`."""
    for k, v in data.items():
        sources[prefix + str(k)] = source
        if isinstance(v, dict):
            _record_sources(v, source, sources, prefix + str(k) + ".")


def _source_of(sources, key, default):
    """Where `key` (or the nearest enclosing key) was set; `default` for built-in defaults."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        found = sources.get(".".join(parts[:n]))
        if found is not None:
            return found
    return default


def _blame(sources, keys, path):
    """Where the values of `keys` came from: the sources that set them (defaults left out), joined."""
    found = []
    for key in keys:
        source = _source_of(sources, key, None)
        if source is not None and source not in found:
            found.append(source)
    return " and ".join(found) or path


def _merge_raw(dst, src):
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge_raw(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)


def _merge(dst, src, source_of, prefix=""):
    """Merge src into dst, refusing keys that the defaults do not have and values of the wrong type."""
    for k, v in src.items():
        key = prefix + str(k)
        if k not in dst:
            if key in REMOVED_KEYS:
                raise ConfigError(f"{source_of(key)}: config key '{key}' no longer exists: {REMOVED_KEYS[key]}")
            known = ", ".join(sorted(dst)) if prefix else "see DEFAULTS in rtdetr_fine/config.py"
            raise ConfigError(f"{source_of(key)}: unknown config key '{key}' (known here: {known})")
        if isinstance(dst[k], dict) and key not in FREE_FORM:
            if not isinstance(v, dict):
                raise ConfigError(f"{source_of(key)}: config key '{key}' must be a mapping, got {v!r}")
            _merge(dst[k], v, source_of, key + ".")
        elif key in FREE_FORM and isinstance(v, dict) and isinstance(dst[k], dict):
            dst[k].update(copy.deepcopy(v))
        elif key in INT_OR_AUTO:
            if v != "auto" and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"{source_of(key)}: config key '{key}' expects a positive integer or auto, "
                                  f"got {v!r}")
            dst[k] = v
        else:
            dst[k] = _checked_value(key, dst[k], v, source_of(key))


def _checked_value(key, default, value, source):
    """The value's type against the default's (ranges and the keys without a typed default: RULES)."""
    if default is None or value is None:
        return copy.deepcopy(value)
    if key in INT_OR_PAIR and isinstance(value, list):
        return copy.deepcopy(value)   # [height, width]
    if isinstance(default, bool) != isinstance(value, bool):
        expected = "true or false" if isinstance(default, bool) else f"a {type(default).__name__}"
        raise ConfigError(f"{source}: config key '{key}' expects {expected}, got {value!r}")
    if isinstance(default, (int, float)) and not isinstance(value, (int, float)):
        raise ConfigError(f"{source}: config key '{key}' expects a number, got {value!r}")
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if isinstance(default, int) and isinstance(value, float) and value.is_integer():
        return int(value)      # 1e3 (read as a float) for an integer key
    if isinstance(default, list) and not isinstance(value, list):
        raise ConfigError(f"{source}: config key '{key}' expects a list, got {value!r}")
    if isinstance(default, dict) and not isinstance(value, dict):
        raise ConfigError(f"{source}: config key '{key}' expects a mapping, got {value!r}")
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"{source}: config key '{key}' expects a string, got {value!r}")
    return copy.deepcopy(value)


def _parse_override(item, source):
    """'a.b.c=value' -> {'a': {'b': {'c': yaml(value)}}}."""
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError(f"{source} must look like dotted.key=value")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"{source}: '{key}' is not a dotted key (e.g. optimizer.lr=1e-4)")
    if len(parts) > MAX_YAML_DEPTH:
        raise ConfigError(f"override '{key[:60]}...': the key has {len(parts)} dotted parts, more than the "
                          f"{MAX_YAML_DEPTH} levels a config nests")
    try:
        value = _yaml_load(raw, parts) if raw.strip() != "" else ""
    except YamlLimitError as e:
        raise ConfigError(f"{source}: {e}") from None
    except yaml.YAMLError:
        value = raw
    out = value
    for part in reversed(parts):
        out = {part: out}
    return out


# ---------------------------------------------------------------- validation: every key's type and range

def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(low=None, high=None):
    """An integer (not a bool), at least `low` and at most `high`."""
    def check(v, cfg=None):
        if _is_int(v) and (low is None or v >= low) and (high is None or v <= high):
            return None
        return "must be an integer" + ("" if low is None else f" >= {low}") + ("" if high is None else f" and <= {high}")
    return check


def _boolean(v, cfg=None):
    return None if isinstance(v, bool) else "must be true or false"


def _text(v, cfg=None):
    return None if isinstance(v, str) and v.strip() else "must be a non-empty string"


def _number(low=None, high=None, low_open=False, high_open=False):
    """A finite number in [low, high] (either end open / absent)."""
    def check(v, cfg=None):
        ok = _is_number(v) and (low is None or (v > low if low_open else v >= low)) \
            and (high is None or (v < high if high_open else v <= high))
        if ok:
            return None
        if low is not None and high is not None:
            return f"must be a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        if low is not None:
            return f"must be a number {'>' if low_open else '>='} {low:g}"
        return "must be a finite number"
    return check


def _one_of(*choices):
    def check(v, cfg=None):
        return None if any(v == c and type(v) is type(c) for c in choices) else f"must be one of {choices}"
    return check


def _optional(rule, what="null"):
    def check(v, cfg=None):
        if v is None:
            return None
        problem = rule(v, cfg)
        return f"{problem} or {what}" if problem else None
    return check


def _list_of(rule, what, min_len=0, length=None):
    """A list of `what` (each passing `rule`): at least min_len entries, or exactly `length`."""
    expected = (f"a list of {length} {what}" if length is not None else
                f"a non-empty list of {what}" if min_len else f"a list of {what}")

    def check(v, cfg=None):
        ok = isinstance(v, list) and len(v) >= min_len and (length is None or len(v) == length) \
            and all(rule(x, cfg) is None for x in v)
        return None if ok else f"must be {expected}"
    return check


_POSITIVE = _number(0, low_open=True)
_NON_NEGATIVE = _number(0)
_PROBABILITY = _number(0, 1)
_DROPOUT = _number(0, 1, high_open=True)


def _image_size(v, cfg):
    """An int (square) or [height, width]; RT-DETR: multiples of 32; SSD300: at least its minimum."""
    sides = [v] if _is_int(v) else v if isinstance(v, list) and len(v) == 2 and all(map(_is_int, v)) else None
    if sides is None or min(sides) <= 0:
        return "must be a positive integer (square) or [height, width]"
    if max(sides) > MAX_IMAGE_SIDE:
        return f"must be at most {MAX_IMAGE_SIDE} px a side"
    if cfg["detector"] == "ssd300":
        from .ssd.model import SSD300
        if min(sides) < SSD300.min_size:
            return f"must be at least {SSD300.min_size} px for SSD300 (its VGG16 extractor's smallest input)"
        return None
    if any(s % RTDETR_SIZE_DIVISIBILITY for s in sides):
        return (f"must be a multiple of {RTDETR_SIZE_DIVISIBILITY} for RT-DETR (its coarsest feature stride), "
                f"e.g. {_round_to(sides[0], RTDETR_SIZE_DIVISIBILITY)}")
    return None


def _feat_strides(v, cfg=None):
    """The strides of the maps the encoder gets: increasing powers of two (FINE pools by their ratios)."""
    if isinstance(v, list) and v and all(_is_int(s) and 1 <= s <= MAX_IMAGE_SIDE and s & (s - 1) == 0 for s in v) \
            and v == sorted(set(v)):
        return None
    return "must be increasing powers of two, one per map the backbone returns (e.g. [8, 16, 32])"


def _round_to(value, step):
    return max(step, step * round(value / step))


def _image_sizes(v, cfg):
    if not isinstance(v, list):
        return "must be a list of image sizes ([] disables multi-scale)"
    for size in v:
        problem = _image_size(size, cfg)
        if problem:
            return f"entry {size!r} {problem}"
    return None


def _pretrained(v, cfg=None):
    return None if v is None or isinstance(v, bool) or (isinstance(v, str) and v.strip()) else \
        "must be null, true (the official weights), a local path or a URL"


def _loss_weights(known):
    def check(v, cfg=None):
        if not isinstance(v, dict) or not v:
            return f"must be a mapping of loss names ({', '.join(known)}) to weights >= 0"
        unknown = sorted(set(v) - set(known))
        if unknown:
            return f"has unknown loss name(s) {unknown} (known: {', '.join(known)})"
        if not all(_is_number(w) and w >= 0 for w in v.values()):
            return "weights must be numbers >= 0"
        return None
    return check


def _criterion_losses(v, cfg=None):
    if not isinstance(v, list) or not v or not all(isinstance(x, str) and x in CRITERION_LOSSES for x in v):
        return f"must be a non-empty list of {sorted(CRITERION_LOSSES)}"
    return None


def _lr_milestones(v, cfg=None):
    return None if isinstance(v, list) and all(_is_int(m) and m > 0 for m in v) else \
        "must be a list of epochs (positive integers)"


def _optimizer_params(v, cfg=None):
    return None if isinstance(v, list) else "must be a list of {params: regex, lr?, weight_decay?} groups"


def _eval_idx(v, cfg):
    layers = cfg["decoder"]["num_decoder_layers"]
    if _is_int(v) and _is_int(layers) and -layers <= v < layers:
        return None
    return f"must be a decoder layer index in [-{layers}, {layers - 1}] (decoder.num_decoder_layers={layers})"


def _min_decoder_layers(v, cfg):
    layers = cfg["decoder"]["num_decoder_layers"]
    return None if _is_int(v) and 1 <= v <= layers else \
        f"must be a number of layers from 1 to decoder.num_decoder_layers={layers}"


def _return_idx(v, cfg):
    stages = cfg["backbone"]["num_stages"]
    if isinstance(v, list) and v and all(_is_int(i) and 0 <= i < stages for i in v) and v == sorted(set(v)):
        return None
    return f"must be increasing stage indices in 0..{stages - 1} (backbone.num_stages={stages})"


def _encoder_idx(v, cfg):
    levels = len(cfg["encoder"]["in_channels"])
    if isinstance(v, list) and all(_is_int(i) and 0 <= i < levels for i in v) and len(set(v)) == len(v):
        return None
    return f"must be a list of distinct level indices in 0..{levels - 1} (encoder.in_channels has {levels} levels)"


# Every key of DEFAULTS (tests/test_config.py checks that none is missing) -> its check. A check gets
# (value, whole config) and returns None or what is wrong ("must be ...").
RULES = {
    "detector": _one_of(*DETECTORS),
    "cross_layer": _optional(_one_of(*CROSS_LAYER_MODULES)),
    "num_classes": lambda v, cfg=None: None if v == "auto" or _int(1, MAX_CLASSES)(v) is None else
    f"must be an integer >= 1 and <= {MAX_CLASSES} or auto",
    "remap_mscoco_category": _boolean,
    "epochs": _int(1, MAX_EPOCHS),
    "output_dir": _text,
    "seed": _int(0, MAX_SEED),
    "backbone.type": _one_of("presnet", "resnet_adn"),
    "backbone.depth": _one_of(18, 34, 50, 101),
    "backbone.variant": _one_of("a", "b", "c", "d"),
    "backbone.num_stages": _one_of(1, 2, 3, 4),
    "backbone.return_idx": _return_idx,
    "backbone.freeze_at": _int(-1),                    # -1: nothing frozen
    "backbone.freeze_norm": _boolean,
    "backbone.pretrained": _pretrained,
    "encoder.in_channels": _list_of(_int(1, MAX_CHANNELS), f"integers from 1 to {MAX_CHANNELS}", min_len=1),
    "encoder.feat_strides": _feat_strides,
    "encoder.hidden_dim": _int(1, MAX_CHANNELS),
    "encoder.use_encoder_idx": _encoder_idx,
    "encoder.num_encoder_layers": _int(0, MAX_LAYERS),
    "encoder.nhead": _int(1, MAX_HEADS),
    "encoder.dim_feedforward": _int(1, MAX_FEEDFORWARD),
    "encoder.dropout": _DROPOUT,
    "encoder.enc_act": _one_of(*ACTIVATIONS),
    "encoder.pe_temperature": _POSITIVE,
    "encoder.expansion": _POSITIVE,
    "encoder.depth_mult": _POSITIVE,
    "encoder.act": _one_of(*ACTIVATIONS),
    "encoder.alignment": _optional(_one_of(*ALIGNMENTS)),
    "fine.enabled": _boolean,
    "fine.attention": lambda v, cfg=None: _one_of(*_fine_choices()[0])(v),
    "fine.modulation": lambda v, cfg=None: _one_of(*_fine_choices()[1])(v),
    "fine.num_heads": _int(1, MAX_HEADS),
    "fine.ffn_ratio": _int(1, 64),
    "fine.upsample": _one_of("nearest", "bilinear"),
    "cfsam.hidden_dim": _int(1, MAX_CHANNELS),
    "cfsam.num_layers": _int(1, MAX_LAYERS),
    "cfsam.num_heads": _int(1, MAX_HEADS),
    "cfsam.dim_feedforward": _int(1, MAX_FEEDFORWARD),
    "cfsam.parts": _int(1, 64),
    "cfsam.dropout": _DROPOUT,
    "cfsam.components": lambda v, cfg=None: _one_of(*_cfsam_components())(v),
    "cfsam.maps": lambda v, cfg: _cfsam_maps(v, cfg),
    "ssd.iou_thresh": _PROBABILITY,
    "ssd.positive_fraction": _number(0, 1, low_open=True),
    "ssd.weight_dict.loss_loc": _NON_NEGATIVE,
    "ssd.weight_dict.loss_conf": _NON_NEGATIVE,
    "ssd.score_thresh": _PROBABILITY,
    "ssd.nms_thresh": _PROBABILITY,
    "ssd.topk_candidates": _int(1, MAX_DETECTIONS),
    "ssd.detections_per_img": _int(1, MAX_DETECTIONS),
    "ssd.fc_init": lambda v, cfg=None: _one_of(*_ssd_fc_inits())(v),
    "decoder.hidden_dim": _int(1, MAX_CHANNELS),
    "decoder.num_queries": _int(1, MAX_QUERIES),
    "decoder.feat_channels": _list_of(_int(1, MAX_CHANNELS), f"integers from 1 to {MAX_CHANNELS}", min_len=1),
    "decoder.num_levels": _int(1, 16),
    "decoder.num_decoder_points": _int(1, 64),
    "decoder.nhead": _int(1, MAX_HEADS),
    "decoder.num_decoder_layers": _int(1, MAX_LAYERS),
    "decoder.dim_feedforward": _int(1, MAX_FEEDFORWARD),
    "decoder.dropout": _DROPOUT,
    "decoder.activation": _one_of(*ACTIVATIONS),
    "decoder.num_denoising": _int(0, MAX_QUERIES),
    "decoder.label_noise_ratio": _PROBABILITY,
    "decoder.box_noise_scale": _NON_NEGATIVE,
    "decoder.learnt_init_query": _boolean,
    "decoder.eval_idx": _eval_idx,
    "decoder.eps": _number(0, 0.5, low_open=True, high_open=True),
    "decoder.aux_loss": _boolean,
    "criterion.weight_dict": _loss_weights([n for names in CRITERION_LOSSES.values() for n in names]),
    "criterion.losses": _criterion_losses,
    "criterion.alpha": _PROBABILITY,
    "criterion.gamma": _NON_NEGATIVE,
    "criterion.matcher.cost_class": _NON_NEGATIVE,
    "criterion.matcher.cost_bbox": _NON_NEGATIVE,
    "criterion.matcher.cost_giou": _NON_NEGATIVE,
    "criterion.matcher.alpha": _PROBABILITY,
    "criterion.matcher.gamma": _NON_NEGATIVE,
    "postprocessor.num_top_queries": _int(1, MAX_DETECTIONS),
    "evaluator.metric": _one_of(*EVAL_METRICS),
    "train_dataloader.dataset.img_folder": _text,
    "train_dataloader.dataset.ann_file": _text,
    "train_dataloader.dataset.exif_transpose": _boolean,
    "train_dataloader.total_batch_size": _int(1, MAX_BATCH),
    "train_dataloader.batch_size": _optional(_int(1, MAX_BATCH), "null (then total_batch_size decides)"),
    "train_dataloader.num_workers": _int(0, MAX_WORKERS),
    "train_dataloader.image_size": _image_size,
    "train_dataloader.multi_scale": _image_sizes,
    "train_dataloader.no_aug_epochs": _int(0, MAX_EPOCHS),
    "val_dataloader.dataset.img_folder": _text,
    "val_dataloader.dataset.ann_file": _text,
    "val_dataloader.dataset.exif_transpose": _boolean,
    "val_dataloader.batch_size": _int(1, MAX_BATCH),
    "val_dataloader.num_workers": _int(0, MAX_WORKERS),
    "val_dataloader.image_size": _image_size,
    "optimizer.type": _one_of(*OPTIMIZERS),
    "optimizer.momentum": _number(0, 1),
    "optimizer.lr": _NON_NEGATIVE,
    "optimizer.weight_decay": _NON_NEGATIVE,
    "optimizer.betas": _list_of(_number(0, 1, high_open=True), "numbers in [0, 1)", length=2),
    "optimizer.params": _optimizer_params,
    "optimizer.clip_max_norm": _NON_NEGATIVE,
    "optimizer.warmup_iters": _int(0, MAX_ITERATIONS),
    "optimizer.lr_milestones": _lr_milestones,
    "optimizer.lr_gamma": _POSITIVE,
    "ema.enabled": _boolean,
    "ema.decay": _PROBABILITY,
    "ema.warmups": _int(0, MAX_ITERATIONS),
    "amp.dtype": _one_of("bfloat16", "float16"),
    "sync_bn": _boolean,
    "find_unused_parameters": _boolean,
    "log_every": _int(1, MAX_ITERATIONS),
    "demo.enabled": _boolean,
    "demo.root": _text,
    "demo.num_train": _int(1, MAX_DEMO_IMAGES),
    "demo.num_val": _int(1, MAX_DEMO_IMAGES),
    "demo.image_size": _int(32, MAX_IMAGE_SIDE),
    "anydepth.enabled": _boolean,
    "anydepth.min_decoder_layers": _optional(_min_decoder_layers, "null (all the full model runs)"),
    "anydepth.distill": _boolean,
    **{f"anydepth.distill_weight_dict.{term}": _NON_NEGATIVE for term in (
        "loss_kd_class", "loss_kd_bbox", "loss_kd_giou", "loss_kd_feat_backbone", "loss_kd_feat_encoder")},
    "anydepth.distill_reduction": _one_of("plain", "authors"),
    "anydepth.independent_scales": _boolean,
    "anydepth.twins_of_frozen_norms": _one_of("trainable", "frozen"),
}


def _fine_choices():
    from .modules.fine import ATTENTION_MODES, MODULATIONS
    return ATTENTION_MODES, MODULATIONS


def _cfsam_components():
    from .modules.cfsam import COMPONENTS
    return COMPONENTS


def _ssd_fc_inits():
    from .ssd.pretrained import FC_INITS
    return FC_INITS


def _cfsam_maps(v, cfg):
    """null, or increasing indices of the maps the head reads (SSD300: 6; RT-DETR: one per decoder.feat_channels)."""
    if v is None:
        return None
    if cfg["detector"] == "ssd300":
        from .ssd.model import SSD300
        count, maps = SSD300.num_maps, "SSD300's prediction maps (38, 19, 10, 5, 3, 1 at 300 px)"
    else:
        count, maps = len(cfg["decoder"]["feat_channels"]), "the maps of decoder.feat_channels"
    if isinstance(v, list) and v and all(_is_int(i) and 0 <= i < count for i in v) and v == sorted(set(v)):
        return None
    return f"must be null (every map) or a list of increasing indices 0..{count - 1} of {maps}"


def leaf_keys(tree: dict, prefix: str = "") -> list:
    """Dotted names of the values in `tree` (mappings in FREE_FORM count as values)."""
    out = []
    for k, v in tree.items():
        key = prefix + k
        out += leaf_keys(v, key + ".") if isinstance(v, dict) and key not in FREE_FORM else [key]
    return out


def _get(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def _validate(cfg, where):
    """Every key by its rule, then the rules that tie keys together. `where(*keys)` names the sources."""
    for key in leaf_keys(DEFAULTS):
        value = _get(cfg, key)
        problem = RULES[key](value, cfg) if key in RULES else None   # a key without a rule: type-checked only
        if problem:
            raise ConfigError(f"{where(key)}: {key} {problem}, got {value!r}")
    _validate_optimizer_groups(cfg["optimizer"]["params"], where("optimizer.params"))
    _validate_combinations(cfg, where)


def _validate_combinations(cfg, where):
    fine, enc, dec = cfg["fine"], cfg["encoder"], cfg["decoder"]

    def fail(keys, message):
        raise ConfigError(f"{where(*keys)}: {message}")

    _resolve_alignment(cfg, fail)
    if cfg["cross_layer"] is not None and fine["enabled"]:
        fail(("cross_layer", "fine.enabled"), f"cross_layer: {cfg['cross_layer']} and fine.enabled: true exclude "
             "each other (both refine the multi-scale maps); switch one of them off")
    if cfg["detector"] != "rtdetr" and fine["enabled"]:
        fail(("fine.enabled", "detector"), f"fine.enabled: true needs detector: rtdetr (FINE lives in RT-DETR's "
             f"hybrid encoder), got detector: {cfg['detector']}")
    if cfg["demo"]["enabled"]:
        from .data.synthetic import SHAPES
        n = cfg["num_classes"]
        if not _is_int(n) or n > len(SHAPES):
            fail(("num_classes", "demo.enabled"), f"demo.enabled generates num_classes shape classes: num_classes "
                 f"must be an integer from 1 to {len(SHAPES)}, got {n!r}")
    if cfg["cross_layer"] == "cfsam" and cfg["cfsam"]["hidden_dim"] % cfg["cfsam"]["num_heads"]:
        fail(("cfsam.hidden_dim", "cfsam.num_heads"), f"cfsam.hidden_dim={cfg['cfsam']['hidden_dim']} must be "
             f"divisible by cfsam.num_heads={cfg['cfsam']['num_heads']}")
    if cfg["anydepth"]["enabled"] and cfg["detector"] != "rtdetr":
        fail(("anydepth.enabled", "detector"), f"anydepth.enabled: true needs detector: rtdetr, got detector: "
             f"{cfg['detector']}")
    _validate_family_keys(cfg, fail)
    if cfg["detector"] != "rtdetr":
        return
    _validate_anydepth_combinations(cfg, fail)
    if len(enc["feat_strides"]) != len(enc["in_channels"]):
        fail(("encoder.feat_strides", "encoder.in_channels"), f"encoder.feat_strides {enc['feat_strides']} needs "
             f"one stride per entry of encoder.in_channels {enc['in_channels']}")
    backbone_strides = [4 * 2 ** i for i in cfg["backbone"]["return_idx"]]   # stages 0..3: strides 4..32
    if enc["feat_strides"] != backbone_strides:
        fail(("encoder.feat_strides", "backbone.return_idx"), f"encoder.feat_strides {enc['feat_strides']} must be "
             f"the strides of the backbone's maps: backbone.return_idx {cfg['backbone']['return_idx']} returns "
             f"strides {backbone_strides}")
    for name, section in (("encoder", enc), ("decoder", dec)):
        if section["hidden_dim"] % section["nhead"]:
            fail((f"{name}.hidden_dim", f"{name}.nhead"), f"{name}.hidden_dim={section['hidden_dim']} must be "
                 f"divisible by {name}.nhead={section['nhead']}")
    if fine["enabled"] and enc["hidden_dim"] % fine["num_heads"]:
        fail(("fine.num_heads", "encoder.hidden_dim"), f"fine.num_heads={fine['num_heads']} must divide "
             f"encoder.hidden_dim={enc['hidden_dim']}")
    channels = dec["feat_channels"]
    if len(channels) != len(enc["in_channels"]) or any(c != enc["hidden_dim"] for c in channels):
        fail(("decoder.feat_channels", "encoder.hidden_dim", "encoder.in_channels"),
             f"decoder.feat_channels {dec['feat_channels']} must list encoder.hidden_dim={enc['hidden_dim']} once "
             f"per encoder output map ({len(enc['in_channels'])}, one per encoder.in_channels entry)")
    if dec["num_levels"] < len(dec["feat_channels"]):
        fail(("decoder.num_levels", "decoder.feat_channels"), f"decoder.num_levels={dec['num_levels']} must be at "
             f"least the number of decoder.feat_channels ({len(dec['feat_channels'])})")
    if _is_int(cfg["num_classes"]):
        most = dec["num_queries"] * cfg["num_classes"]
        if cfg["postprocessor"]["num_top_queries"] > most:
            fail(("postprocessor.num_top_queries", "decoder.num_queries", "num_classes"),
                 f"postprocessor.num_top_queries={cfg['postprocessor']['num_top_queries']} is more than the "
                 f"decoder.num_queries x num_classes = {most} scores there are")


def _validate_family_keys(cfg, fail):
    """Keys of the other detector family (FAMILY_KEYS) changed from their defaults: refused, naming them."""
    family = cfg["detector"]
    foreign = [key for key in leaf_keys(DEFAULTS) if family_of_key(key) not in (None, family)
               and _get(cfg, key) != _get(DEFAULTS, key)]
    if foreign:
        owner = family_of_key(foreign[0])
        fail(tuple(foreign) + ("detector",), f"detector: {family} does not read the {FAMILY_NAMES[owner]}-only "
             f"key(s) {', '.join(foreign)} (they would be ignored); remove them, or set detector: {owner}")


def _resolve_alignment(cfg, fail):
    """encoder.alignment: fine and fine.enabled: true say the same; each is set to agree with the other.
    The Table 2 modules replace layers of the official RT-DETR encoder, which the any-depth conversion
    expects (input_proj, fpn_blocks)."""
    fine, alignment = cfg["fine"], cfg["encoder"]["alignment"]
    if fine["enabled"] and alignment not in (None, "fine"):
        fail(("encoder.alignment", "fine.enabled"), f"encoder.alignment: {alignment} and fine.enabled: true exclude "
             "each other (one alignment module per encoder); switch one of them off")
    if fine["enabled"] or alignment == "fine":
        fine["enabled"], cfg["encoder"]["alignment"] = True, "fine"
    elif alignment is not None and cfg["detector"] != "rtdetr":
        fail(("encoder.alignment", "detector"), f"encoder.alignment: {alignment} needs detector: rtdetr (it lives in "
             f"RT-DETR's hybrid encoder), got detector: {cfg['detector']}")
    elif alignment is not None and cfg["anydepth"]["enabled"]:
        fail(("encoder.alignment", "anydepth.enabled"), f"encoder.alignment: {alignment} replaces layers of the "
             "official encoder that the any-depth conversion converts (input_proj, fpn_blocks); any-depth takes "
             "the official encoder or FINE")


def _validate_anydepth_combinations(cfg, fail):
    """The authors' backbone (backbone.type resnet_adn) and the keys of any-depth training."""
    b, a = cfg["backbone"], cfg["anydepth"]
    if b["type"] == "resnet_adn" and b["depth"] not in (50, 101):
        fail(("backbone.depth", "backbone.type"), f"backbone.type: resnet_adn has depths 50 and 101 (the authors' "
             f"ResNet_ADN), got backbone.depth: {b['depth']}")
    if b["type"] == "resnet_adn" and b["variant"] not in ("a", "d"):
        fail(("backbone.variant", "backbone.type"), f"backbone.type: resnet_adn has variants a and d (its shortcut), "
             f"got backbone.variant: {b['variant']}")
    if a["independent_scales"] and not (a["enabled"] and a["distill"]):
        fail(("anydepth.independent_scales", "anydepth.enabled", "anydepth.distill"), "anydepth.independent_scales "
             "draws a size for each of the two passes of any-depth self-distillation: it needs anydepth.enabled "
             "and anydepth.distill true")
    if a["independent_scales"] and not cfg["train_dataloader"]["multi_scale"]:
        fail(("anydepth.independent_scales", "train_dataloader.multi_scale"), "anydepth.independent_scales draws "
             "the sizes from train_dataloader.multi_scale, which is empty")


def _validate_optimizer_groups(groups, where):
    """optimizer.params: [{params: regex, lr?: number, weight_decay?: number}, ...]."""
    for i, group in enumerate(groups):
        at = f"{where}: optimizer.params[{i}]"
        if not isinstance(group, dict) or not isinstance(group.get("params"), str):
            raise ConfigError(f"{at} must be a mapping with a regex string 'params', got {group!r}")
        unknown = set(group) - OPTIMIZER_GROUP_KEYS
        if unknown:
            raise ConfigError(f"{at}: unknown key(s) {sorted(unknown)} (allowed: {sorted(OPTIMIZER_GROUP_KEYS)})")
        for key in ("lr", "weight_decay"):
            value = group.get(key, 0.0)
            if not _is_number(value) or value < 0:
                raise ConfigError(f"{at}.{key} must be a non-negative number, got {value!r}")
        _check_regex_size(group["params"], f"{at}.params")
        try:
            regex.compile(group["params"], flags=regex.V0)   # as engine/optim.py matches it (re's syntax)
        except regex.error as e:
            raise ConfigError(f"{at}.params is not a valid regex: {group['params']!r} ({e})") from None


# A parameter name is under 200 characters, so a useful pattern is short and repeats little. The `regex`
# module unrolls counted repeats when it compiles (`a{1000000000}` would take gigabytes): their bounds,
# multiplied together (an upper estimate of the unrolled size), and the pattern's length are bounded.
MAX_REGEX_LENGTH = 1_000
MAX_REGEX_REPEATS = 10_000
_COUNTED_REPEAT = re.compile(r"\\.|\{(\d*)(?:,(\d*))?\}", re.S)   # an escape (skipped) or {m,n}


def _check_regex_size(pattern, key):
    if len(pattern) > MAX_REGEX_LENGTH:
        raise ConfigError(f"{key} is a regex of {len(pattern)} characters, more than the {MAX_REGEX_LENGTH} a "
                          "parameter-name pattern needs")
    product = 1
    for match in _COUNTED_REPEAT.finditer(pattern):
        if not match.group(0).startswith("\\"):
            product *= max(int(match.group(1) or 0), int(match.group(2) or 0), 1)
    if product > MAX_REGEX_REPEATS:
        raise ConfigError(f"{key} {pattern!r} repeats too much: its counted repeats ({{m,n}}) multiply to "
                          f"{product}, more than {MAX_REGEX_REPEATS} (parameter names are short)")


def dump_config(cfg):
    return yaml.safe_dump(cfg, sort_keys=False)
