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
  blocks are switchable (PResNet: branch2a/2b/2c; the authors' ResNet-ADN, resnet_adn.py:
  bn1/bn2/bn3), the shortcut's norm and the stem are not;
* neck ("neck", one unit): in each CSPRep layer RepVGG block 0 always runs and the others can be
  skipped; the norms of every always-run conv-norm layer are switchable: input projections,
  lateral and downsample convs, CSP conv1 / conv2 and conv3 when present (R18, expansion 0.5:
  it consumes the sum that skipping changes), and RepVGG block 0's conv1 / conv2, as in the
  authors' HybridEncoderADN. Block 0 fuses per depth at deploy (deploy.py). AIFI always runs, with
  switchable norm1 / norm2. FINE, when enabled, always runs with its own norms;
* decoder: the number of decoder layers run in eval mode; the output is the last run layer's
  (the decoder's own `eval_idx`). Training always runs every layer (auxiliary losses).

A switchable norm *is* its main norm (same class family, same state-dict entries, so official
checkpoints load unchanged) with a child `skip` twin: `<name>.norm.skip.weight` etc. Where the main
norm is a FrozenBatchNorm2d (R50 with freeze_norm), the twin is a trainable nn.BatchNorm2d in this
project's variant (the skipped configuration adapts) or a FrozenBatchNorm2d as in the authors' model
(anydepth.twins_of_frozen_norms: frozen); a LayerNorm's twin is a LayerNorm.
Under DDP with sync_bn, `norms.convert_sync_batchnorm` replaces torch's conversion.

The depth is a setting of the built model (module flags, not weights): `set_depth(model, spec)` (depth.py)
with spec "full", "min" (all skips, `anydepth.min_decoder_layers` decoder layers) or explicit
"backbone=1,0,1,1 neck=1 decoder=4" (1 = skip that unit's skippable path; omitted keys: full).
"""
import re
from dataclasses import dataclass
from typing import Iterable, Optional

import torch
from torch import nn

from ..distributed import unwrap
from ..nn.layers import ConvNormLayer
from ..rtdetr.decoder import TransformerDecoder
from .deploy import switchable_repvgg
from .norms import Switchable, make_switchable
from .resnet_adn import Bottleneck as AdnBottleneck
from .resnet_adn import ResNetADN

NECK_ESSENTIAL_BLOCKS = 1   # RepVGG block 0 of every CSPRep layer


class DepthSpecError(ValueError):
    pass


def essential_blocks(num_blocks: int) -> int:
    """Blocks of a backbone stage that always run: about the first half, at least one skippable."""
    return min(num_blocks - 1, (num_blocks + 1) // 2)


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


def convert_to_anydepth(model: nn.Module, min_decoder_layers: Optional[int] = None,
                        twins_of_frozen_norms: str = "trainable") -> nn.Module:
    """RT-DETR -> its any-depth form, in place (returns `model`); the weights of `model` are kept.

    min_decoder_layers: decoder layers of the `min` depth (None: as many as `full` runs).
    twins_of_frozen_norms: "trainable" (BatchNorm2d twins) | "frozen" (FrozenBatchNorm2d twins, the authors').
    """
    if hasattr(model, "anydepth"):
        raise ValueError("the model is already any-depth")
    stage_blocks, stage_essential = _convert_backbone(model.backbone, twins_of_frozen_norms)
    neck_blocks = _convert_neck(model.encoder)
    decoder = transformer_decoder(model)
    full_layers = decoder.eval_idx + 1
    min_layers = full_layers if min_decoder_layers is None else min_decoder_layers
    if not 1 <= min_layers <= full_layers:
        raise ValueError(f"anydepth.min_decoder_layers={min_decoder_layers} must be between 1 and the {full_layers} "
                         f"decoder layers the full model runs (decoder.num_decoder_layers, decoder.eval_idx)")
    model.anydepth = AnyDepthLayout(tuple(stage_blocks), tuple(stage_essential), tuple(neck_blocks),
                                    decoder.num_layers, full_layers, min_layers)
    return model


def _convert_backbone(backbone: nn.Module, twins_of_frozen_norms: str) -> tuple:
    """Each stage -> skippable; the main-branch norms of its essential blocks -> switchable."""
    stage_blocks, stage_essential = [], []
    for i, (blocks, install) in enumerate(_stages(backbone)):
        unit = f"backbone.{i}"
        num_essential = essential_blocks(len(blocks))
        for block in blocks[:num_essential]:
            for owner, name in _main_branch_norms(block):
                setattr(owner, name, make_switchable(getattr(owner, name), unit, twins_of_frozen_norms))
        install(SkippableSequential(blocks, num_essential, unit))
        stage_blocks.append(len(blocks))
        stage_essential.append(num_essential)
    return stage_blocks, stage_essential


def _stages(backbone: nn.Module) -> list:
    """Per ResNet stage: (its blocks, install(container) putting the skippable container in the stage's
    place under the same state-dict names: PResNet `res_layers.i.blocks.j`, ResNet-ADN `layer{i+1}.j`)."""
    if isinstance(backbone, ResNetADN):
        return [(list(getattr(backbone, name)), lambda blocks, name=name: setattr(backbone, name, blocks))
                for name in backbone.stage_names]
    return [(list(stage.blocks), lambda blocks, i=i: backbone.res_layers.__setitem__(i, SkippableStage(blocks)))
            for i, stage in enumerate(backbone.res_layers)]


def _main_branch_norms(block: nn.Module) -> list:
    """(module, attribute) of each norm on a residual block's main branch (the shortcut's norm is shared)."""
    if isinstance(block, AdnBottleneck):
        return [(block, name) for name in AdnBottleneck.MAIN_NORMS]
    return [(branch, "norm") for name, branch in block.named_children()
            if name != "short" and isinstance(branch, ConvNormLayer)]


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
        essential = csp.bottlenecks[0]                # RepVGG block 0, always run
        for conv in (csp.conv1, csp.conv2, csp.conv3, essential.conv1, essential.conv2):
            if isinstance(conv, ConvNormLayer):       # conv3 is Identity when hidden == out channels
                conv.norm = make_switchable(conv.norm, "neck")
        csp.bottlenecks[0] = switchable_repvgg(essential)   # its deploy form: one fused conv per norm set
        neck_blocks.append(len(csp.bottlenecks))
        csp.bottlenecks = SkippableSequential(list(csp.bottlenecks), NECK_ESSENTIAL_BLOCKS, "neck")
    return neck_blocks


# The twins of RepVGG block 0's norms, which our any-depth checkpoints saved before them (issue 22) lack.
BLOCK0_TWIN = re.compile(r"^encoder\.(fpn|pan)_blocks\.\d+\.bottlenecks\.0\.conv[12]\.norm\.skip\.")


def block0_twins_missing(state: dict, missing: Iterable[str]) -> list:
    """The `missing` names that are block-0 twins, when `state` is one of our older any-depth checkpoints
    (it has the other twins); else []. Such a checkpoint used block 0's main norms at every depth, so
    twins copied from them (norms.init_skip_norms_from_main) compute what it computed."""
    if not any(".skip." in k for k in state):
        return []
    return [k for k in missing if BLOCK0_TWIN.match(k)]


def transformer_decoder(model: nn.Module) -> TransformerDecoder:
    return model.decoder.decoder


def is_anydepth(model: nn.Module) -> bool:
    return hasattr(unwrap(model), "anydepth")


def layout_of(model: nn.Module) -> AnyDepthLayout:
    model = unwrap(model)
    if not hasattr(model, "anydepth"):
        raise DepthSpecError("this model is not any-depth: a depth needs a config with anydepth.enabled: true")
    return model.anydepth


def count_depth_params(model: nn.Module) -> int:
    """Parameters of what the model runs at its current depth in eval mode: all but the skipped
    blocks, the unused half of each switchable norm (or fused conv), and the decoder layers (and their heads)
    after the last one run. At `full` this equals the baseline's parameter count."""
    model = unwrap(model)
    unused = set()
    for module in model.modules():
        if isinstance(module, SkippableSequential) and module.skipping:
            unused |= {id(p) for block in module.skippable() for p in block.parameters()}
        if isinstance(module, Switchable):
            idle = module.parameters(recurse=False) if module.skipping else module.skip.parameters()
            unused |= {id(p) for p in idle}
    decoder_layers = transformer_decoder(model).eval_idx + 1
    transformer = model.decoder
    for layers in (transformer.decoder.layers, transformer.dec_score_head, transformer.dec_bbox_head):
        unused |= {id(p) for layer in list(layers)[decoder_layers:] for p in layer.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in unused)
