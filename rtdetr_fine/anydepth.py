"""Any-depth RT-DETR: one set of weights, the depth chosen at inference without retraining.

The any-depth detection paper (seed 001, second abstract) splits every backbone and neck stage
into an *essential* path that always runs and a *skippable* refinement path; its predecessor
(Kang et al., "Adaptive Depth Networks with Skippable Sub-Paths") gives the layers that always
run a second set of norms ("switchable BN") used when the path after them is skipped. This file
converts a built RT-DETR into that form, the way `nn.SyncBatchNorm.convert_sync_batchnorm`
converts norms, so backbone.py / hybrid_encoder.py stay the official model:

* backbone, per ResNet stage of n blocks (a skip unit each, "backbone.0" .. "backbone.3"):
  the first `essential_blocks(n)` blocks always run, the rest can be skipped (R50 [3, 4, 6, 3]
  -> skippable [1, 2, 3, 1], R18 -> one per stage); the main-branch norms of the essential
  blocks (branch2a/2b/2c) are switchable, the shortcut's norm and the stem are not;
* neck ("neck", one unit): in each CSPRep layer RepVGG block 0 always runs and the others can be
  skipped; the norms of every always-run conv-norm layer are switchable: input projections,
  lateral and downsample convs, CSP conv1 / conv2 and conv3 when present (R18, expansion 0.5:
  it consumes the sum that skipping changes). AIFI always runs, with switchable norm1 / norm2.
  The RepVGG block 0 norms are not switched (the authors' list has no such norms; it also keeps
  RepVGG fusion one fold per block). FINE, when enabled, always runs with its own norms;
* decoder: the number of decoder layers run in eval mode; the output is the last run layer's
  (the decoder's own `eval_idx`). Training always runs every layer (auxiliary losses).

A switchable norm *is* its main norm (same class family, same state-dict entries, so official
checkpoints load unchanged) with a child `skip` twin: `<name>.norm.skip.weight` etc. The twin
is a trainable nn.BatchNorm2d also where the main norm is a FrozenBatchNorm2d (R50 with
freeze_norm), since the skipped configuration must adapt; a LayerNorm's twin is a LayerNorm.
Under DDP with sync_bn, `convert_sync_batchnorm` (below) replaces torch's conversion.

The depth is a setting of the built model (module flags, not weights): `set_depth(model, spec)`
with spec "full", "min" (all skips, `anydepth.min_decoder_layers` decoder layers) or explicit
"backbone=1,0,1,1 neck=1 decoder=4" (1 = skip that unit's skippable path; omitted keys: full).
"""
import contextlib
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional, Union

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from .decoder import TransformerDecoder
from .distributed import unwrap
from .layers import ConvNormLayer

SPEC_KEYS = ("backbone", "neck", "decoder")
NECK_ESSENTIAL_BLOCKS = 1   # RepVGG block 0 of every CSPRep layer


class DepthSpecError(ValueError):
    pass


def essential_blocks(num_blocks: int) -> int:
    """Blocks of a backbone stage that always run: about the first half, at least one skippable."""
    return min(num_blocks - 1, (num_blocks + 1) // 2)


# ---------------------------------------------------------------------------------------------
# Switchable norms and skippable block sequences
# ---------------------------------------------------------------------------------------------

class SwitchableNorm:
    """Mixin for a norm with a `skip` twin: the twin normalises while the norm's unit skips.

    `unit` names the skip unit ("backbone.2", "neck"); `skipping` is set by `set_depth`.
    """
    unit: str
    skipping: bool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.skipping:
            return self.skip(x)
        return super().forward(x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, unit={self.unit}"


class SwitchableBatchNorm2d(SwitchableNorm, nn.BatchNorm2d):
    pass


class SwitchableFrozenBatchNorm2d(SwitchableNorm, FrozenBatchNorm2d):
    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, unit={self.unit}"

    def __repr__(self) -> str:   # FrozenBatchNorm2d's __repr__ would hide the twin
        return nn.Module.__repr__(self)


class SwitchableLayerNorm(SwitchableNorm, nn.LayerNorm):
    pass


class SwitchableSyncBatchNorm(SwitchableNorm, nn.SyncBatchNorm):
    """SwitchableBatchNorm2d after `convert_sync_batchnorm` (main and twin synchronised)."""


class SkippableSequential(nn.Sequential):
    """nn.Sequential whose modules after the first `num_essential` are skipped while `skipping`."""

    def __init__(self, modules: Iterable[nn.Module], num_essential: int, unit: str):
        super().__init__(*modules)
        if not 1 <= num_essential < len(self):
            raise ValueError(f"{unit}: {len(self)} blocks cannot keep {num_essential} essential and skip the rest "
                             "(any-depth needs at least 2 blocks per stage)")
        self.num_essential, self.unit, self.skipping = num_essential, unit, False

    def active(self) -> list:
        """The modules the current depth runs."""
        return list(self)[:self.num_essential] if self.skipping else list(self)

    def skippable(self) -> list:
        return list(self)[self.num_essential:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.active():
            x = module(x)
        return x

    def extra_repr(self) -> str:
        return f"unit={self.unit}, essential={self.num_essential}"


class SkippableStage(nn.Module):
    """A ResNet stage (backbone.Blocks) as `blocks` = SkippableSequential: the same state-dict names."""

    def __init__(self, blocks: SkippableSequential):
        super().__init__()
        self.blocks = blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


def make_switchable(norm: nn.Module, unit: str) -> SwitchableNorm:
    """A switchable copy of `norm` (same values and state-dict entries) whose `skip` twin starts equal to it."""
    if type(norm) is nn.BatchNorm2d:
        args = (norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats)
        new, twin = SwitchableBatchNorm2d(*args), nn.BatchNorm2d(*args)
    elif type(norm) is FrozenBatchNorm2d:
        num_features = norm.weight.shape[0]
        new, twin = SwitchableFrozenBatchNorm2d(num_features, norm.eps), nn.BatchNorm2d(num_features, norm.eps)
    elif type(norm) is nn.LayerNorm:
        args = (norm.normalized_shape, norm.eps, norm.elementwise_affine)
        new, twin = SwitchableLayerNorm(*args), nn.LayerNorm(*args)
    else:
        raise TypeError(f"any-depth: cannot make a {type(norm).__name__} switchable "
                        "(BatchNorm2d, FrozenBatchNorm2d and LayerNorm are supported)")
    new.load_state_dict(norm.state_dict())
    reference = next((t for t in norm.state_dict().values() if t.is_floating_point()), None)
    new.skip = twin
    new.unit, new.skipping = unit, False
    if reference is not None:
        new.to(device=reference.device, dtype=reference.dtype)
    copy_main_to_skip(new)
    return new


def convert_sync_batchnorm(module: nn.Module, process_group=None) -> nn.Module:
    """nn.SyncBatchNorm.convert_sync_batchnorm that keeps switchable norms switchable: torch's would
    turn a SwitchableBatchNorm2d into a plain SyncBatchNorm (its twin never used). The same as
    torch's on a model without switchable norms. Main and twin share their tensors with the input."""
    if isinstance(module, SwitchableBatchNorm2d):
        out = SwitchableSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                      module.track_running_stats, process_group)
        for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            setattr(out, name, tensor)
        out.skip = nn.SyncBatchNorm.convert_sync_batchnorm(module.skip, process_group)
        out.unit, out.skipping, out.training = module.unit, module.skipping, module.training
        return out
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, process_group))
    return module


@torch.no_grad()
def copy_main_to_skip(norm: SwitchableNorm) -> None:
    """twin <- main: weight, bias and running statistics (what each of them has)."""
    main = {**dict(norm.named_parameters(recurse=False)), **dict(norm.named_buffers(recurse=False))}
    for name, tensor in {**dict(norm.skip.named_parameters()), **dict(norm.skip.named_buffers())}.items():
        if name in main:
            tensor.copy_(main[name])


# ---------------------------------------------------------------------------------------------
# The conversion
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AnyDepthLayout:
    """What a converted model can skip; kept on the model as `model.anydepth` (no weights)."""
    stage_blocks: tuple          # blocks per backbone stage
    stage_essential: tuple       # of which always run
    neck_blocks: tuple           # RepVGG blocks per CSPRep layer (block 0 always runs)
    decoder_layers: int          # built
    full_decoder_layers: int     # run by `full` (decoder.eval_idx + 1)
    min_decoder_layers: int      # run by `min`

    @property
    def full(self) -> "Depth":
        return Depth((False,) * len(self.stage_blocks), False, self.full_decoder_layers)

    @property
    def min(self) -> "Depth":
        return Depth((True,) * len(self.stage_blocks), True, self.min_decoder_layers)


@dataclass(frozen=True)
class Depth:
    """backbone: skip flag per stage; neck: skip flag; decoder: decoder layers run at inference."""
    backbone: tuple
    neck: bool
    decoder: int

    def skipped_units(self) -> set:
        units = {f"backbone.{i}" for i, skip in enumerate(self.backbone) if skip}
        return units | ({"neck"} if self.neck else set())


def convert_to_anydepth(model: nn.Module, min_decoder_layers: Optional[int] = None) -> nn.Module:
    """RT-DETR -> its any-depth form, in place (returns `model`); the weights of `model` are kept.

    min_decoder_layers: decoder layers of the `min` depth (None: as many as `full` runs).
    """
    if hasattr(model, "anydepth"):
        raise ValueError("the model is already any-depth")
    stage_blocks, stage_essential = _convert_backbone(model.backbone)
    neck_blocks = _convert_neck(model.encoder)
    decoder = _transformer_decoder(model)
    full_layers = decoder.eval_idx + 1
    min_layers = full_layers if min_decoder_layers is None else min_decoder_layers
    if not 1 <= min_layers <= full_layers:
        raise ValueError(f"anydepth.min_decoder_layers={min_decoder_layers} must be between 1 and the {full_layers} "
                         f"decoder layers the full model runs (decoder.num_decoder_layers, decoder.eval_idx)")
    model.anydepth = AnyDepthLayout(tuple(stage_blocks), tuple(stage_essential), tuple(neck_blocks),
                                    decoder.num_layers, full_layers, min_layers)
    return model


def _convert_backbone(backbone: nn.Module) -> tuple:
    """Each stage -> SkippableStage; the main-branch norms of its essential blocks -> switchable."""
    stage_blocks, stage_essential = [], []
    for i, stage in enumerate(backbone.res_layers):
        unit = f"backbone.{i}"
        blocks = list(stage.blocks)
        num_essential = essential_blocks(len(blocks))
        for block in blocks[:num_essential]:
            for name, branch in block.named_children():
                if name != "short" and isinstance(branch, ConvNormLayer):   # the shortcut's norm is shared
                    branch.norm = make_switchable(branch.norm, unit)
        backbone.res_layers[i] = SkippableStage(SkippableSequential(blocks, num_essential, unit))
        stage_blocks.append(len(blocks))
        stage_essential.append(num_essential)
    return stage_blocks, stage_essential


def _convert_neck(encoder: nn.Module) -> list:
    """CCFF's RepVGG tails -> skippable; every always-run conv-norm and AIFI norm -> switchable."""
    for proj in encoder.input_proj:                     # Sequential(conv, BatchNorm2d)
        proj[1] = make_switchable(proj[1], "neck")
    for aifi in encoder.encoder:
        for layer in aifi.layers:
            layer.norm1 = make_switchable(layer.norm1, "neck")
            layer.norm2 = make_switchable(layer.norm2, "neck")
    for conv in [*encoder.lateral_convs, *encoder.downsample_convs]:
        conv.norm = make_switchable(conv.norm, "neck")
    neck_blocks = []
    for csp in [*encoder.fpn_blocks, *encoder.pan_blocks]:
        for conv in (csp.conv1, csp.conv2, csp.conv3):
            if isinstance(conv, ConvNormLayer):       # conv3 is Identity when hidden == out channels
                conv.norm = make_switchable(conv.norm, "neck")
        neck_blocks.append(len(csp.bottlenecks))
        csp.bottlenecks = SkippableSequential(list(csp.bottlenecks), NECK_ESSENTIAL_BLOCKS, "neck")
    return neck_blocks


def _transformer_decoder(model: nn.Module) -> TransformerDecoder:
    return model.decoder.decoder


def is_anydepth(model: nn.Module) -> bool:
    return hasattr(unwrap(model), "anydepth")


def layout_of(model: nn.Module) -> AnyDepthLayout:
    model = unwrap(model)
    if not hasattr(model, "anydepth"):
        raise DepthSpecError("this model is not any-depth: a depth needs a config with anydepth.enabled: true")
    return model.anydepth


# ---------------------------------------------------------------------------------------------
# Depth specs: parse, describe, apply
# ---------------------------------------------------------------------------------------------

def parse_depth(spec: str, layout: AnyDepthLayout) -> Depth:
    """'full' | 'min' | 'backbone=1,0,1,1 neck=1 decoder=4' (1 = skip; omitted keys as in full) -> Depth."""
    text = spec.strip()
    if text == "full":
        return layout.full
    if text == "min":
        return layout.min
    values = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        if not sep:
            raise DepthSpecError(f"depth {spec!r}: {token!r} is not key=value; a depth is 'full', 'min' or "
                                 "'backbone=1,0,1,1 neck=1 decoder=4' (1 = skip)")
        if key not in SPEC_KEYS:
            raise DepthSpecError(f"depth {spec!r}: unknown key {key!r} (keys: {', '.join(SPEC_KEYS)})")
        if key in values:
            raise DepthSpecError(f"depth {spec!r}: {key!r} given twice")
        values[key] = value
    if not values:
        raise DepthSpecError("empty depth: use 'full', 'min' or 'backbone=1,0,1,1 neck=1 decoder=4'")
    full = layout.full
    backbone, neck, decoder = full.backbone, full.neck, full.decoder
    if "backbone" in values:
        flags = values["backbone"].split(",")
        if len(flags) != len(layout.stage_blocks):
            raise DepthSpecError(f"depth {spec!r}: backbone has {len(flags)} flags, but the backbone has "
                                 f"{len(layout.stage_blocks)} stages (one 0/1 flag per stage, 1 = skip)")
        backbone = tuple(_flag(f, "backbone", spec) for f in flags)
    if "neck" in values:
        neck = _flag(values["neck"], "neck", spec)
    if "decoder" in values:
        try:
            decoder = int(values["decoder"])
        except ValueError:
            raise DepthSpecError(f"depth {spec!r}: decoder={values['decoder']!r} is not a number of layers") from None
        if not 1 <= decoder <= layout.decoder_layers:
            raise DepthSpecError(f"depth {spec!r}: decoder={decoder}, but the model has "
                                 f"{layout.decoder_layers} decoder layers (decoder.num_decoder_layers)")
    return Depth(backbone, neck, decoder)


def _flag(text: str, key: str, spec: str) -> bool:
    if text not in ("0", "1"):
        raise DepthSpecError(f"depth {spec!r}: {key} flag {text!r} must be 0 (run) or 1 (skip)")
    return text == "1"


def benchmark_depths(layout: AnyDepthLayout) -> list:
    """The depths a cost table lists: full, each backbone stage skipped alone, the neck skipped
    alone, all skips (decoder as in full), and min (all skips, fewest decoder layers)."""
    full, n = layout.full, len(layout.stage_blocks)
    alone = [Depth(tuple(i == j for j in range(n)), False, full.decoder) for i in range(n)]
    depths = [full, *alone, Depth(full.backbone, True, full.decoder), Depth((True,) * n, True, full.decoder),
              layout.min]
    return list(dict.fromkeys(depths))   # all skips == min when min keeps every decoder layer


def depth_spec(depth: Depth) -> str:
    """The explicit spec of `depth`, e.g. 'backbone=1,0,1,1 neck=1 decoder=4' (parse_depth reads it back)."""
    flags = ",".join("1" if s else "0" for s in depth.backbone)
    return f"backbone={flags} neck={int(depth.neck)} decoder={depth.decoder}"


def depth_tag(depth: Depth, layout: AnyDepthLayout) -> str:
    """Short, filename-safe name: 'full', 'min' or e.g. 'b1011_n1_d4'."""
    if depth == layout.full:
        return "full"
    if depth == layout.min:
        return "min"
    return f"b{''.join('1' if s else '0' for s in depth.backbone)}_n{int(depth.neck)}_d{depth.decoder}"


def describe_depth(depth: Depth, layout: AnyDepthLayout) -> str:
    """For logs: 'min (backbone=1,1,1,1 neck=1 decoder=4)' or the explicit spec."""
    tag = depth_tag(depth, layout)
    return f"{tag} ({depth_spec(depth)})" if tag in ("full", "min") else depth_spec(depth)


def set_depth(model: nn.Module, spec: Union[str, Depth]) -> Depth:
    """Run `model` at the given depth from now on (no weights change); returns the Depth."""
    model = unwrap(model)
    layout = layout_of(model)
    depth = spec if isinstance(spec, Depth) else parse_depth(spec, layout)
    if len(depth.backbone) != len(layout.stage_blocks) or not 1 <= depth.decoder <= layout.decoder_layers:
        raise DepthSpecError(f"depth {depth} does not fit this model ({layout})")
    skipped = depth.skipped_units()
    for module in model.modules():
        if isinstance(module, (SwitchableNorm, SkippableSequential)):
            module.skipping = module.unit in skipped
    _transformer_decoder(model).eval_idx = depth.decoder - 1
    return depth


def get_depth(model: nn.Module) -> Depth:
    """The depth `model` runs at (read from its modules)."""
    model = unwrap(model)
    layout = layout_of(model)
    flags = {m.unit: m.skipping for m in model.modules() if isinstance(m, SkippableSequential)}
    backbone = tuple(flags[f"backbone.{i}"] for i in range(len(layout.stage_blocks)))
    return Depth(backbone, flags["neck"], _transformer_decoder(model).eval_idx + 1)


@contextlib.contextmanager
def using_depth(model: nn.Module, spec: Union[str, Depth, None]) -> Iterator[Optional[Depth]]:
    """Run `model` at `spec` inside the block, then at its previous depth; None: leave it as it is."""
    if spec is None:
        yield None
        return
    previous = get_depth(model)
    try:
        yield set_depth(model, spec)
    finally:
        set_depth(model, previous)


def resolve_depths(model: nn.Module, specs: Optional[list]) -> list:
    """CLI --depth values -> Depths (errors name the bad spec). None given: [full] for an any-depth
    model, [None] (no depth) for any other."""
    if not specs:
        return [layout_of(model).full] if is_anydepth(model) else [None]
    layout = layout_of(model)
    depths = [parse_depth(spec, layout) for spec in specs]
    return list(dict.fromkeys(depths))   # each depth once, in the order given


# ---------------------------------------------------------------------------------------------
# Loading and counting
# ---------------------------------------------------------------------------------------------

def init_skip_norms_from_main(model: nn.Module, loaded_keys: Iterable[str],
                              log: Callable[[str], None] = print) -> list:
    """After a (fine-tune) load: every switchable norm whose twin was not among `loaded_keys`
    copies its just-loaded main norm, e.g. an official RT-DETR checkpoint -> any-depth model.
    Returns the names of the norms initialised so."""
    loaded = set(loaded_keys)
    names = [name for name, m in unwrap(model).named_modules()
             if isinstance(m, SwitchableNorm) and not any(f"{name}.skip.{k}" in loaded for k in m.skip.state_dict())]
    for name in names:
        copy_main_to_skip(unwrap(model).get_submodule(name))
    if names:
        log(f"any-depth: {len(names)} switchable norms are not in the checkpoint; their skip twins start "
            "as copies of the loaded main norms")
    return names


def count_depth_params(model: nn.Module) -> int:
    """Parameters of what the model runs at its current depth in eval mode: all but the skipped
    blocks, the unused half of each switchable norm, and the decoder layers (and their heads)
    after the last one run. At `full` this equals the baseline's parameter count."""
    model = unwrap(model)
    unused = set()
    for module in model.modules():
        if isinstance(module, SkippableSequential) and module.skipping:
            unused |= {id(p) for block in module.skippable() for p in block.parameters()}
        if isinstance(module, SwitchableNorm):
            idle = module.parameters(recurse=False) if module.skipping else module.skip.parameters()
            unused |= {id(p) for p in idle}
    decoder_layers = _transformer_decoder(model).eval_idx + 1
    transformer = model.decoder
    for layers in (transformer.decoder.layers, transformer.dec_score_head, transformer.dec_bbox_head):
        unused |= {id(p) for layer in list(layers)[decoder_layers:] for p in layer.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in unused)
