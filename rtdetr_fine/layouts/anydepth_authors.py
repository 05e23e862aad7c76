"""The any-depth authors' RT-DETR (HyungseopLee/Dynamic-Routing-AnyDepthYOLO, `anydepth-rt-detr`, config
rtdetr_r50vd_6x_coco_adn.yml: ResNet_ADN + HybridEncoderADN + the official decoder), and the any-depth
ImageNet ResNets its backbone starts from (wchkang/depth). Their names differ from ours only in the
norm twins and in the neck's input projections:

    theirs                                          ours
    backbone.layer1.0.bn1_skip.*                    backbone.layer1.0.bn1.skip.*      (twins of bn1, bn2, bn3)
    encoder.input_proj.0.conv.weight                encoder.input_proj.0.0.weight     (the official RT-DETR names)
    encoder.input_proj.0.norm.*                     encoder.input_proj.0.1.*
    encoder.input_proj.0.norm_skippable.*           encoder.input_proj.0.1.skip.*
    encoder.<...>.norm_skippable.*                  encoder.<...>.norm.skip.*         (conv-norm layers)
    encoder.encoder.0.layers.0.norm1_skippable.*    encoder.encoder.0.layers.0.norm1.skip.*   (AIFI)

The backbone's other names (torchvision's: conv1, bn1, layer1.0.conv1, layer2.0.downsample.1, ...) are
ours as they are (rtdetr_fine/anydepth/resnet_adn.py), as are the decoder's (the official ones).
"""
import re

NAME = "the any-depth authors' RT-DETR"

# Applied in this order to every name (the input projections' twin before the general twin rule). Only
# the encoder's input projections are renamed: the decoder's `input_proj.i.conv` is the official name.
RENAMES = (
    (re.compile(r"\.(bn\d)_skip\."), r".\1.skip."),
    (re.compile(r"^(encoder\.input_proj\.\d+)\.conv\."), r"\1.0."),
    (re.compile(r"^(encoder\.input_proj\.\d+)\.norm_skippable\."), r"\1.1.skip."),
    (re.compile(r"^(encoder\.input_proj\.\d+)\.norm\."), r"\1.1."),
    (re.compile(r"\.(norm\d?)_skippable\."), r".\1.skip."),
)
THEIRS = re.compile(r"\.bn\d_skip\.|_skippable\.|^encoder\.input_proj\.\d+\.conv\.")


def matches(state: dict) -> bool:
    return any(THEIRS.search(k) for k in state)


def our_name(name: str) -> str:
    for pattern, replacement in RENAMES:
        name = pattern.sub(replacement, name)
    return name


def to_ours(state: dict) -> dict:
    return {our_name(k): v for k, v in state.items()}
