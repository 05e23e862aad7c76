"""Switchable norms: a norm with a `skip` twin that normalises while the path after it is skipped
("switchable BN" of Kang et al., "Adaptive Depth Networks with Skippable Sub-Paths").

A switchable norm *is* its main norm (same class family, same state-dict entries, so official
checkpoints load unchanged) with a child `skip` twin: `<name>.norm.skip.weight` etc.
"""
from typing import Callable, Iterable

import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from ..distributed import unwrap

TWINS_OF_FROZEN_NORMS = ("trainable", "frozen")   # config anydepth.twins_of_frozen_norms


class Switchable:
    """Mixin for a module with a `skip` twin that runs in its place while the module's unit skips.

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


class SwitchableNorm(Switchable):
    """A switchable norm (the twin normalises while the norm's unit skips)."""


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


def make_switchable(norm: nn.Module, unit: str, frozen_twins: str = "trainable") -> SwitchableNorm:
    """A switchable copy of `norm` (same values and state-dict entries) whose `skip` twin starts equal to it.

    frozen_twins: the twin of a FrozenBatchNorm2d is a trainable BatchNorm2d ("trainable", this
    project's variant: the skipped configuration adapts) or a FrozenBatchNorm2d ("frozen", the
    any-depth authors' ResNet_ADN, whose twins come frozen from its any-depth ImageNet model)."""
    if frozen_twins not in TWINS_OF_FROZEN_NORMS:
        raise ValueError(f"anydepth.twins_of_frozen_norms must be one of {TWINS_OF_FROZEN_NORMS}, got {frozen_twins!r}")
    if type(norm) is nn.BatchNorm2d:
        args = (norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats)
        new, twin = SwitchableBatchNorm2d(*args), nn.BatchNorm2d(*args)
    elif type(norm) is FrozenBatchNorm2d:
        num_features = norm.weight.shape[0]
        twin = FrozenBatchNorm2d(num_features, norm.eps) if frozen_twins == "frozen" \
            else nn.BatchNorm2d(num_features, norm.eps)
        new = SwitchableFrozenBatchNorm2d(num_features, norm.eps)
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
