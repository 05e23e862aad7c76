"""ResNet-ADN: the backbone of the any-depth authors' RT-DETR (their `ResNet_ADN`), before the any-depth
conversion. It is a torchvision-style ResNet-D, not the official PResNet-vd (rtdetr/backbone.py), whatever
the authors' config name ("r50vd") says:

* stem: one 7x7/2 conv (`conv1`) + `bn1` + ReLU + 3x3/2 max-pool (PResNet-vd: three 3x3 convs);
* torchvision's Bottleneck ("ResNet v1.5"): 1x1 `conv1` -> 3x3 `conv2` (which carries the stride) ->
  1x1 `conv3`, each followed by its norm `bn1`..`bn3`;
* block 0 of each stage has a projection shortcut `downsample`. Variant "d" (the authors'): in the
  stages that halve the map an average pool, then a stride-1 1x1 conv and its norm (`downsample.0`
  pool, `.1` conv, `.2` norm); in the first stage a 1x1 conv and norm (`.0`, `.1`). Variant "a": a
  1x1 conv with the stride and its norm everywhere (torchvision's);
* torchvision's names throughout, so the any-depth ImageNet ResNets it starts from (wchkang/depth,
  Kang et al., "Adaptive Depth Networks with Skippable Sub-Paths") load by name;
* freeze_norm: every norm a FrozenBatchNorm2d; freeze_at as PResNet's (0: the stem conv only).

`convert_to_anydepth` (convert.py) then makes the stages skippable and gives bn1..bn3 of each stage's
shared blocks their twins (FrozenBatchNorm2d in the authors' model: anydepth.twins_of_frozen_norms).
Its ImageNet weights load after that conversion (`load_adn_pretrained`), as they carry the twins.
"""
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from ..layouts.anydepth_authors import to_ours
from ..nn.pretrained import check_weight_values
from ..rtdetr.backbone import read_pretrained
from .norms import init_skip_norms_from_main

ARCH = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3]}     # blocks per stage (Bottleneck only, as the authors')
VARIANTS = ("a", "d")
STAGE_NAMES = ("layer1", "layer2", "layer3", "layer4")

# the any-depth ImageNet models the authors' code downloads (wchkang/depth releases; torchvision names + twins)
PRETRAINED_URLS = {
    50: "https://github.com/wchkang/depth/releases/download/v1.0.0/"
        "weights-resnet50vd_kd_ce_from_resnext101_32x8d_swsl_imagenet21k_1k_T2_T2_step3_finetune.pth",
    101: "https://github.com/wchkang/depth/releases/download/v1.0.0/"
         "weights-resnet101vd_kd_ce_from_resnext101_32x8d_swsl_imagenet21k_1k_T2_T2_step3_finetune.pth",
}


def conv1x1(ch_in: int, ch_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(ch_in, ch_out, 1, stride, bias=False)


def shortcut(ch_in: int, ch_out: int, stride: int, variant: str, norm) -> nn.Sequential:
    """Block 0's projection: [AvgPool2d(2, 2, ceil_mode),] 1x1 conv, norm (see the module docstring)."""
    if variant == "d" and stride == 2:
        return nn.Sequential(nn.AvgPool2d(2, 2, 0, ceil_mode=True), conv1x1(ch_in, ch_out), norm(ch_out))
    return nn.Sequential(conv1x1(ch_in, ch_out, stride), norm(ch_out))


class Bottleneck(nn.Module):
    """torchvision's Bottleneck: x -> relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x))))))) + shortcut(x))."""
    expansion = 4
    MAIN_NORMS = ("bn1", "bn2", "bn3")      # the norms on the main branch (the ones a shared block twins)

    def __init__(self, ch_in: int, width: int, stride: int = 1, downsample: nn.Module | None = None, norm=None):
        super().__init__()
        self.conv1 = conv1x1(ch_in, width)
        self.bn1 = norm(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, padding=1, bias=False)
        self.bn2 = norm(width)
        self.conv3 = conv1x1(width, width * self.expansion)
        self.bn3 = norm(width * self.expansion)
        self.downsample = downsample        # registered after the branch: the authors' state-dict order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))          # stride here
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNetADN(nn.Module):
    """Returns the maps of stages `return_idx` (0 = stride 4 ... 3 = stride 32), as PResNet does."""

    def __init__(self, depth: int = 50, variant: str = "d", num_stages: int = 4, return_idx=(1, 2, 3),
                 freeze_at: int = -1, freeze_norm: bool = True):
        super().__init__()
        if depth not in ARCH:
            raise ValueError(f"backbone.depth: ResNet-ADN has depths {sorted(ARCH)}, got {depth}")
        if variant not in VARIANTS:
            raise ValueError(f"backbone.variant: ResNet-ADN has variants {VARIANTS}, got {variant!r}")
        norm = FrozenBatchNorm2d if freeze_norm else nn.BatchNorm2d
        self.depth, self.variant = depth, variant
        self.conv1 = nn.Conv2d(3, 64, 7, 2, padding=3, bias=False)
        self.bn1 = norm(64)
        self.stage_names = list(STAGE_NAMES[:num_stages])
        ch_in = 64
        for i, name in enumerate(self.stage_names):
            width, stride = 64 * 2 ** i, 1 if i == 0 else 2
            blocks = [Bottleneck(ch_in, width, stride, shortcut(ch_in, width * 4, stride, variant, norm), norm)]
            blocks += [Bottleneck(width * 4, width, norm=norm) for _ in range(1, ARCH[depth][i])]
            setattr(self, name, nn.Sequential(*blocks))
            ch_in = width * 4
        self.return_idx = list(return_idx)
        self.out_channels = [256 * 2 ** i for i in self.return_idx]
        self.out_strides = [4 * 2 ** i for i in self.return_idx]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):       # torchvision's initialisation (ImageNet weights replace it)
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if freeze_at >= 0:
            frozen = [self.conv1, *[getattr(self, n) for n in self.stage_names[:freeze_at]]]
            for p in (p for m in frozen for p in m.parameters()):
                p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> list:
        x = F.relu(self.bn1(self.conv1(x)))                                  # [B, 64, H/2, W/2]
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)              # H/4
        outs = []
        for i, name in enumerate(self.stage_names):
            x = getattr(self, name)(x)                                       # [B, 256 * 2^i, H/2^(i+2), ...]
            if i in self.return_idx:
                outs.append(x)
        return outs


def load_adn_pretrained(backbone: ResNetADN, source, depth: int, log=print) -> ResNetADN:
    """ImageNet weights of an any-depth ResNet (wchkang/depth: torchvision names, twins `bnN_skip`, a
    classifier `fc`) into `backbone`, from a local path, a URL or True (the authors' file for `depth`).

    Called after the any-depth conversion: the twins go to the switchable norms' `skip`. A checkpoint
    without twins (a plain ResNet-D) gives each twin a copy of its main norm; a backbone that is not
    any-depth takes the main norms only. The classifier is not used. Anything else that does not fit is
    a ValueError naming the file."""
    state = read_pretrained(source, PRETRAINED_URLS[depth])
    state = to_ours({k.removeprefix("module."): v for k, v in state.items()})
    state = {k: v for k, v in state.items() if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    own = backbone.state_dict()
    if not any(".skip." in k for k in own) and any(".skip." in k for k in state):
        log(f"backbone.pretrained {source}: its skip twins are not used (anydepth.enabled: false)")
        state = {k: v for k, v in state.items() if ".skip." not in k}
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if k not in state and ".skip." not in k and not k.endswith("num_batches_tracked")]
    mismatched = [k for k in state if k in own and own[k].shape != state[k].shape]
    if unexpected or missing or mismatched:
        raise ValueError(f"backbone.pretrained {source} does not fit ResNet-ADN{depth} (backbone.type resnet_adn, "
                         f"variant {backbone.variant}): "
                         f"missing {missing[:4]}, unexpected {unexpected[:4]}, other shapes {mismatched[:4]}")
    check_weight_values(source, state, own)
    backbone.load_state_dict(state, strict=False)
    init_skip_norms_from_main(backbone, state, log)
    return backbone
