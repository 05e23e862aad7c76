"""ImageNet VGG16 weights for SSD300's feature extractor (config keys backbone.pretrained, ssd.fc_init).

The extractor holds VGG16's 13 convs (conv1_1 .. conv5_3) and, where VGG16 has its classifier, fc6 as
a 3x3 conv dilated by 6 (512 -> 1024 channels) and fc7 as a 1x1 conv (1024 -> 1024).

ssd.fc_init: random (torchvision's ssd300_vgg16)
    the 13 convs from torchvision's VGG16_Weights.IMAGENET1K_FEATURES (the Caffe VGG16 ported by
    amdegroot/ssd.pytorch; its input is SSD300's: 0-255 pixels minus the mean); fc6 / fc7 keep
    torchvision's xavier initialisation.
ssd.fc_init: reduced_vgg16 (the SSD paper, Sec. 3, "Base network"; DeepLab-LargeFOV's reduction)
    fc6 / fc7 subsampled from VGG16's ImageNet classifier (reduce_classifier):
      fc6 [4096, 25088] -> [4096, 512, 7, 7] -> every 4th output, every 3rd tap (0, 3, 6) each way -> [1024, 512, 3, 3]
      fc7 [4096, 4096]  -> every 4th output and every 4th input                               -> [1024, 1024, 1, 1]
      biases: every 4th.
    torchvision's file with the classifier is VGG16_Weights.IMAGENET1K_V1 (IMAGENET1K_FEATURES has
    none). fc6's weights read conv5_3's channels of the network they were trained with, and two
    independently trained VGG16s share no channel order, so the 13 convs come from the same file
    (IMAGENET1K_V1). That network was trained on ImageNet-standardised input ((x - mean) / std, x in
    [0, 1]); conv1_1 is rescaled so that it sees that through SSD300's 0-255 standardisation
    (fold_input_standardisation), which stays torchvision's.

backbone.pretrained: true downloads the file once into the torch hub cache (torchvision's URL for the
fc_init); a local path stands for that file (IMAGENET1K_FEATURES with random, a torchvision vgg16
state dict such as IMAGENET1K_V1 with reduced_vgg16). Errors name the source.
"""
import re

import torch
from torch import nn
from torchvision.models import VGG16_Weights

from ..nn.pretrained import check_weight_values, read_pretrained

FC_INITS = ("reduced_vgg16", "random")
WEIGHTS = {"random": VGG16_Weights.IMAGENET1K_FEATURES, "reduced_vgg16": VGG16_Weights.IMAGENET1K_V1}
TORCHVISION_URLS = {w.url for w in WEIGHTS.values()}
FC6, FC7 = "classifier.0", "classifier.3"      # VGG16's first two Linear layers in a torchvision state dict
OUTPUT_STEP, TAP_STEP = 4, 3                   # the SSD paper's subsampling: 4096 -> 1024 channels, 7x7 -> 3x3 taps


def source_of(pretrained, fc_init: str) -> str:
    """The file backbone.pretrained names: torchvision's URL for the fc_init when it is true, else the path / URL given."""
    return WEIGHTS[fc_init].url if pretrained is True else str(pretrained)


def read_state_dict(source: str) -> dict:
    """A state dict from a local file or a URL (torch hub cache); errors name the source."""
    return read_pretrained(source, check_hash=source in TORCHVISION_URLS)


def load_vgg16_features(extractor: nn.Module, state: dict) -> None:
    """Copy VGG16's 13 convs (`features.N.weight/bias` of a torchvision vgg16 state dict) into the
    SSD extractor, whose first 13 convs are the same layers (conv1_1 .. conv5_3) in the same order."""
    indices = sorted(int(m.group(1)) for k in state if (m := re.fullmatch(r"features\.(\d+)\.weight", k)))
    convs = [m for m in extractor.modules() if isinstance(m, nn.Conv2d)][:13]
    if len(indices) != 13:
        raise ValueError(f"backbone.pretrained: expected the 13 conv weights of a torchvision vgg16 state dict "
                         f"(features.N.weight), found {len(indices)}")
    for conv, i in zip(convs, indices):
        weight, bias = state[f"features.{i}.weight"], state[f"features.{i}.bias"]
        if weight.shape != conv.weight.shape:
            raise ValueError(f"backbone.pretrained: features.{i}.weight is {tuple(weight.shape)}, "
                             f"the SSD extractor expects {tuple(conv.weight.shape)}")
        with torch.no_grad():
            conv.weight.copy_(weight)
            conv.bias.copy_(bias)


def reduce_classifier(state: dict, source: str = "the state dict") -> dict:
    """VGG16's classifier fc6 / fc7 subsampled to the SSD paper's conv6 / conv7 (module docstring).

    Any size whose fc6 input is C x 7 x 7: fc6 [O6, C * 49] -> weight [O6 / 4, C, 3, 3]; fc7 [O7, O6] ->
    [O7 / 4, O6 / 4, 1, 1]. Returns {"fc6.weight", "fc6.bias", "fc7.weight", "fc7.bias"}.
    """
    missing = [f"{name}.{p}" for name in (FC6, FC7) for p in ("weight", "bias") if f"{name}.{p}" not in state]
    if missing:
        raise ValueError(f"backbone.pretrained: {source} has no {', '.join(missing)}: ssd.fc_init: reduced_vgg16 "
                         "subsamples VGG16's ImageNet classifier (a torchvision vgg16 state dict with its "
                         "classifier, e.g. VGG16_Weights.IMAGENET1K_V1); set ssd.fc_init: random to keep fc6/fc7 "
                         "random")
    fc6, fc7 = state[f"{FC6}.weight"], state[f"{FC7}.weight"]
    if fc6.dim() != 2 or fc6.shape[1] % 49 or fc7.dim() != 2 or fc7.shape[1] != fc6.shape[0]:
        raise ValueError(f"backbone.pretrained: {source}'s {FC6}.weight {tuple(fc6.shape)} and {FC7}.weight "
                         f"{tuple(fc7.shape)} are not VGG16's classifier (fc6 reads C x 7 x 7, fc7 fc6's outputs)")
    fc6 = fc6.reshape(fc6.shape[0], -1, 7, 7)                                  # [O6, C, 7, 7]
    return {"fc6.weight": fc6[::OUTPUT_STEP, :, ::TAP_STEP, ::TAP_STEP].clone(),
            "fc6.bias": state[f"{FC6}.bias"][::OUTPUT_STEP].clone(),
            "fc7.weight": fc7[::OUTPUT_STEP, ::OUTPUT_STEP, None, None].clone(),
            "fc7.bias": state[f"{FC7}.bias"][::OUTPUT_STEP].clone()}


def fc_convs(extractor: nn.Module) -> tuple:
    """(fc6, fc7): the last two convs of the block that ends at fc7 (extractor.extra[0])."""
    return tuple(m for m in extractor.extra[0].modules() if isinstance(m, nn.Conv2d))[-2:]


def load_reduced_fc(extractor: nn.Module, reduced: dict, source: str = "the state dict") -> None:
    """Copy reduce_classifier's tensors into the extractor's fc6 / fc7 (shapes checked)."""
    for name, conv in zip(("fc6", "fc7"), fc_convs(extractor)):
        for param in ("weight", "bias"):
            value, target = reduced[f"{name}.{param}"], getattr(conv, param)
            if value.shape != target.shape:
                raise ValueError(f"backbone.pretrained: {source}'s classifier gives {name}.{param} "
                                 f"{tuple(value.shape)}, the SSD extractor's {name} is {tuple(target.shape)}")
            with torch.no_grad():
                target.copy_(value)


def fold_input_standardisation(conv: nn.Conv2d, trained: tuple, used: tuple) -> None:
    """Rescale a first conv trained on input (x - m_t) / s_t to take (x - m_u) / s_u instead.

    trained, used: (mean, std) per input channel. With z_t = z_u * s_u / s_t + (m_u - m_t) / s_t:
    W' = W * s_u / s_t and b' = b + sum W * (m_u - m_t) / s_t, exact wherever the kernel sees no padding.
    """
    (m_t, s_t), (m_u, s_u) = [(torch.tensor(m, dtype=torch.float64), torch.tensor(s, dtype=torch.float64))
                              for m, s in (trained, used)]
    with torch.no_grad():
        weight = conv.weight.double()
        conv.bias.add_((weight * ((m_u - m_t) / s_t).view(1, -1, 1, 1)).sum((1, 2, 3)).to(conv.bias.dtype))
        conv.weight.copy_(weight * (s_u / s_t).view(1, -1, 1, 1))


def load_imagenet_vgg16(extractor: nn.Module, pretrained, fc_init: str, input_standardisation: tuple) -> str:
    """Load ImageNet VGG16 weights into SSD300's extractor as fc_init says (module docstring); returns
    the source. input_standardisation: SSD300's (mean, std), what conv1_1 sees."""
    if fc_init not in FC_INITS:
        raise ValueError(f"ssd.fc_init must be one of {FC_INITS}, got {fc_init!r}")
    source = source_of(pretrained, fc_init)
    state = read_state_dict(source)
    # every VGG16 tensor SSD300 takes (features.*, and classifier.* for reduced_vgg16) is a floating-point weight
    taken = ("features.", "classifier.") if fc_init == "reduced_vgg16" else ("features.",)
    takes = {k: torch.empty(v.shape, device="meta") for k, v in state.items() if k.startswith(taken)}
    check_weight_values(source, state, takes)
    if fc_init == "reduced_vgg16":
        reduced = reduce_classifier(state, source)      # before any copy: a file without a classifier changes nothing
        load_vgg16_features(extractor, state)
        load_reduced_fc(extractor, reduced, source)
        transforms = WEIGHTS[fc_init].transforms()
        fold_input_standardisation(next(m for m in extractor.modules() if isinstance(m, nn.Conv2d)),
                                   (transforms.mean, transforms.std), input_standardisation)
    else:
        load_vgg16_features(extractor, state)
    return source

