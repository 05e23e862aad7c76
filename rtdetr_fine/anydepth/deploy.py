"""The deploy form of an any-depth model: RepVGG fusion per depth.

RepVGG block 0 of each CSP layer always runs, and its two norms are switchable (the twins normalise
while the neck skips). RepVGG's deploy form folds the norms into one 3x3 conv, which can hold only one
set of norms; so block 0 becomes a SwitchableRepVggBlock (convert.py) whose deploy form fuses the convs
twice, with the main norms and with the twins, into a SwitchableConv2d: at each depth the model runs
(and an ONNX export of that depth holds) the conv fused from the norms that depth uses.
`RTDETR.deploy()` finds it like any other module with a deploy form; the baseline RepVggBlock is unchanged.
"""
import torch
from torch import nn

from ..rtdetr.hybrid_encoder import RepVggBlock
from .norms import Switchable


class SwitchableConv2d(Switchable, nn.Conv2d):
    """A conv with a `skip` twin conv that runs in its place while its unit skips (set_depth)."""

    @classmethod
    def from_pair(cls, main: nn.Conv2d, twin: nn.Conv2d, unit: str, skipping: bool) -> "SwitchableConv2d":
        new = cls(main.in_channels, main.out_channels, main.kernel_size, main.stride, main.padding,
                  bias=main.bias is not None).to(main.weight)
        new.load_state_dict(main.state_dict())
        new.skip, new.unit, new.skipping = twin, unit, skipping
        return new


class SwitchableRepVggBlock(RepVggBlock):
    """A RepVggBlock whose conv1 / conv2 norms are switchable. It computes what RepVggBlock computes;
    only its deploy form differs: one fused 3x3 conv per norm set, chosen by the depth."""

    @torch.no_grad()
    def convert_to_deploy(self):
        if hasattr(self, "conv"):
            return
        norm1, norm2 = self.conv1.norm, self.conv2.norm
        main = self.fused_conv(norm1, norm2)                 # a switchable norm's own tensors are the main norm's
        twin = self.fused_conv(norm1.skip, norm2.skip)
        self.conv = SwitchableConv2d.from_pair(main, twin, norm1.unit, norm1.skipping)
        del self.conv1, self.conv2


def switchable_repvgg(block: RepVggBlock) -> SwitchableRepVggBlock:
    """`block` itself, as a SwitchableRepVggBlock: the same modules and weights, another deploy form
    (the class is swapped in place, as torch.nn.utils.parametrize does)."""
    if type(block) is not RepVggBlock:
        raise TypeError(f"any-depth: expected a RepVggBlock, got {type(block).__name__}")
    block.__class__ = SwitchableRepVggBlock
    return block
