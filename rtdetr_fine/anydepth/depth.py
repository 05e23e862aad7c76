"""Depth specs: 'full', 'min' or 'backbone=1,0,1,1 neck=1 decoder=4' -> Depth, and setting the depth a
converted model runs at (module flags only: no weights change)."""
import contextlib
from typing import Iterator, Optional, Union

from torch import nn

from ..distributed import unwrap
from .convert import (AnyDepthLayout, Depth, DepthSpecError, SkippableSequential, transformer_decoder,
                      is_anydepth, layout_of)
from .norms import Switchable

SPEC_KEYS = ("backbone", "neck", "decoder")


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
        if isinstance(module, (Switchable, SkippableSequential)):
            module.skipping = module.unit in skipped
    transformer_decoder(model).eval_idx = depth.decoder - 1
    return depth


def get_depth(model: nn.Module) -> Depth:
    """The depth `model` runs at (read from its modules)."""
    model = unwrap(model)
    layout = layout_of(model)
    flags = {m.unit: m.skipping for m in model.modules() if isinstance(m, SkippableSequential)}
    backbone = tuple(flags[f"backbone.{i}"] for i in range(len(layout.stage_blocks)))
    return Depth(backbone, flags["neck"], transformer_decoder(model).eval_idx + 1)


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
