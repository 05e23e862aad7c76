"""PResNet: the ResNet-vd backbone of RT-DETR (depths 18/34/50/101).

Variant "d" (He et al., "Bag of Tricks") replaces the 7x7 stem by three 3x3 convs
and downsamples shortcuts with a 2x2 average pool before a 1x1 conv. Parameter
names follow the official implementation so its checkpoints load unchanged.
"""
from collections import OrderedDict

from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from ..nn.layers import ConvNormLayer, get_activation
from ..nn import pretrained as pretrained_weights

# depth -> (block type, blocks per stage)
ARCH = {
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
}

# ImageNet weights converted from PaddlePaddle by the RT-DETR authors; keys are backbone names.
PRETRAINED_URLS = {
    18: "https://github.com/lyuwenyu/storage/releases/download/v0.1/ResNet18_vd_pretrained_from_paddle.pth",
    34: "https://github.com/lyuwenyu/storage/releases/download/v0.1/ResNet34_vd_pretrained_from_paddle.pth",
    50: "https://github.com/lyuwenyu/storage/releases/download/v0.1/ResNet50_vd_ssld_v2_pretrained_from_paddle.pth",
    101: "https://github.com/lyuwenyu/storage/releases/download/v0.1/ResNet101_vd_ssld_pretrained_from_paddle.pth",
}


def _shortcut(ch_in, ch_out, stride, variant):
    """1x1 projection shortcut; variant 'd' average-pools before a stride-1 conv."""
    if variant == "d" and stride == 2:
        return nn.Sequential(OrderedDict([
            ("pool", nn.AvgPool2d(2, 2, 0, ceil_mode=True)),
            ("conv", ConvNormLayer(ch_in, ch_out, 1, 1)),
        ]))
    return ConvNormLayer(ch_in, ch_out, 1, stride)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, ch_in, ch_out, stride, shortcut, act="relu", variant="d"):
        super().__init__()
        self.shortcut = shortcut
        if not shortcut:
            self.short = _shortcut(ch_in, ch_out, stride, variant)
        self.branch2a = ConvNormLayer(ch_in, ch_out, 3, stride, act=act)
        self.branch2b = ConvNormLayer(ch_out, ch_out, 3, 1, act=None)
        self.act = get_activation(act)

    def forward(self, x):
        out = self.branch2b(self.branch2a(x))
        return self.act(out + (x if self.shortcut else self.short(x)))


class BottleNeck(nn.Module):
    expansion = 4

    def __init__(self, ch_in, ch_out, stride, shortcut, act="relu", variant="d"):
        super().__init__()
        stride_1x1, stride_3x3 = (stride, 1) if variant == "a" else (1, stride)
        self.branch2a = ConvNormLayer(ch_in, ch_out, 1, stride_1x1, act=act)
        self.branch2b = ConvNormLayer(ch_out, ch_out, 3, stride_3x3, act=act)
        self.branch2c = ConvNormLayer(ch_out, ch_out * self.expansion, 1, 1)
        self.shortcut = shortcut
        if not shortcut:   # registered after the branches: the official state-dict order
            self.short = _shortcut(ch_in, ch_out * self.expansion, stride, variant)
        self.act = get_activation(act)

    def forward(self, x):
        out = self.branch2c(self.branch2b(self.branch2a(x)))
        return self.act(out + (x if self.shortcut else self.short(x)))


class Blocks(nn.Module):
    """One ResNet stage; the first block changes channels (and stride, except stage 2)."""

    def __init__(self, block, ch_in, ch_out, count, stage_num, act="relu", variant="d"):
        super().__init__()
        self.blocks = nn.ModuleList()
        for i in range(count):
            stride = 2 if i == 0 and stage_num != 2 else 1
            self.blocks.append(block(ch_in, ch_out, stride, shortcut=i != 0, act=act, variant=variant))
            ch_in = ch_out * block.expansion

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return x


class PResNet(nn.Module):
    """ResNet-vd returning the feature maps of stages `return_idx` (0 = stride 4 ... 3 = stride 32)."""

    def __init__(self, depth: int = 50, variant: str = "d", num_stages: int = 4, return_idx=(1, 2, 3),
                 act: str = "relu", freeze_at: int = -1, freeze_norm: bool = False):
        super().__init__()
        if depth not in ARCH:
            raise ValueError(f"backbone.depth must be one of {sorted(ARCH)}, got {depth}")
        block_type, block_nums = ARCH[depth]
        block = BasicBlock if block_type == "basic" else BottleNeck
        ch_in = 64
        if variant in ("c", "d"):
            stem = [(3, ch_in // 2, 3, 2, "conv1_1"), (ch_in // 2, ch_in // 2, 3, 1, "conv1_2"),
                    (ch_in // 2, ch_in, 3, 1, "conv1_3")]
        else:
            stem = [(3, ch_in, 7, 2, "conv1_1")]
        self.conv1 = nn.Sequential(OrderedDict(
            (name, ConvNormLayer(ci, co, k, s, act=act)) for ci, co, k, s, name in stem))

        ch_out_list = [64, 128, 256, 512]
        self.res_layers = nn.ModuleList()
        for i in range(num_stages):
            self.res_layers.append(Blocks(block, ch_in, ch_out_list[i], block_nums[i], i + 2, act, variant))
            ch_in = ch_out_list[i] * block.expansion

        self.return_idx = list(return_idx)
        channels = [c * block.expansion for c in ch_out_list]
        self.out_channels = [channels[i] for i in self.return_idx]
        self.out_strides = [[4, 8, 16, 32][i] for i in self.return_idx]

        if freeze_at >= 0:
            _freeze_parameters(self.conv1)
            for i in range(min(freeze_at, num_stages)):
                _freeze_parameters(self.res_layers[i])
        if freeze_norm:
            _replace_batchnorm_with_frozen(self)

    def forward(self, x):
        x = self.conv1(x)                                        # [B, 64, H/2, W/2]
        x = nn.functional.max_pool2d(x, kernel_size=3, stride=2, padding=1)  # H/4
        outs = []
        for i, stage in enumerate(self.res_layers):
            x = stage(x)
            if i in self.return_idx:
                outs.append(x)
        return outs


def _freeze_parameters(module):
    for p in module.parameters():
        p.requires_grad_(False)


def _replace_batchnorm_with_frozen(module):
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, FrozenBatchNorm2d(child.num_features))
        else:
            _replace_batchnorm_with_frozen(child)


def read_pretrained(source, url):
    """backbone.pretrained -> the state dict it holds: a local path, a URL, or True (`url`, the
    default weights); a {"model": ...} checkpoint gives its "model".

    The download (torch.hub cache) happens on the user's machine; here there is no network.
    """
    if source is True:
        source = url
    return pretrained_weights.read_pretrained(source)   # errors name the key and the file


def load_pretrained_backbone(backbone, source, depth):
    """Load ImageNet weights into `backbone` from a local path, a URL, or True (official URL)."""
    state = read_pretrained(source, PRETRAINED_URLS[depth])
    pretrained_weights.check_weight_values(source, state, backbone.state_dict())
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not k.endswith("num_batches_tracked")]:
        raise ValueError(f"backbone.pretrained {source!r} does not fit PResNet{depth}: "
                         f"missing {missing[:5]}..., unexpected {unexpected[:5]}...")
    return backbone
