"""SSD300 (Liu et al., ECCV 2016) from torchvision, in the interfaces train.py / eval.py / export_onnx.py use.

torchvision's `ssd300_vgg16` builds the network (VGG16 feature extractor with the six prediction maps
conv4_3, fc7, conv8_2 .. conv11_2, default boxes, head); its matching, box coding, loss (smooth L1 +
cross-entropy with 3:1 hard negative mining) and post-processing (per-class score threshold, top-k,
NMS) are called as they are. What this file adds is the glue:

  * SSD300 (this file): images [B, 3, H, W] in [0, 1] -> raw head outputs + default boxes; an
                        optional cross-layer module (CFSAM) between the feature extractor and the head.
  * SSDCriterion (criterion.py): our targets (labels 0..K-1, boxes cxcywh normalised) -> weighted loss terms.
  * SSDPostProcessor (postprocessor.py): PostProcessor's call and output (list of labels / xyxy pixel
                        boxes / scores, or fixed-size tensors in deploy mode for ONNX export).

Classes: `num_classes` counts object classes, as everywhere in this repo (20 for VOC, 80 for COCO);
the SSD classifier has num_classes + 1 outputs, index 0 being background (torchvision's
convention), so object label k is SSD class k + 1.

Boxes are handled normalised to [0, 1] (default boxes included). Matching (IoU), box coding
(offsets relative to the default box) and NMS give the same results as torchvision's pixel
boxes up to float rounding: all are invariant to scaling x and y.
"""
import torch
from torch import Tensor, nn
from torchvision.models.detection import ssd300_vgg16
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.ssd import SSD

from .pretrained import load_imagenet_vgg16

# ssd300_vgg16's input normalisation: VGG16 (Caffe) weights expect 0-255 pixels minus the mean.
SSD_IMAGE_MEAN = (0.48235, 0.45882, 0.40784)
SSD_IMAGE_STD = (1.0 / 255.0, 1.0 / 255.0, 1.0 / 255.0)
BOX_CODER_WEIGHTS = (10.0, 10.0, 5.0, 5.0)       # torchvision's SSD (the SSD paper's variances 0.1, 0.2)


class SSD300(nn.Module):
    """torchvision's SSD300 network; forward: images [B, 3, H, W] in [0, 1] (300 x 300) ->

    {"cls_logits": [B, A, num_classes + 1], "bbox_regression": [B, A, 4] (box-coder offsets),
     "anchors": [A, 4] default boxes xyxy normalised to [0, 1]}, A = 8732 at 300 x 300.
    `targets` is accepted for the common model(images, targets) call and not used (the loss is
    the criterion's). The default boxes use torchvision's steps (8 .. 300 px), which are meant for
    300 x 300 input; other sizes (>= 268) run, with the box centres drifting off the grid.
    """

    size_divisibility = 1   # any input size the VGG16 extractor takes (>= 268 px); export_onnx reads this
    min_size = 268          # smaller inputs leave conv11_2 without its 3x3 input (configs are checked against it)
    num_maps = 6            # the maps the head reads: conv4_3, fc7, conv8_2 .. conv11_2 (cfsam.maps is checked against it)

    def __init__(self, ssd: SSD, cross_layer: nn.Module | None = None):
        super().__init__()
        self.backbone = ssd.backbone                  # SSDFeatureExtractorVGG: 6 maps
        self.cross_layer = cross_layer                # e.g. CFSAM; None: the plain SSD300
        self.head = ssd.head
        self.anchor_generator = ssd.anchor_generator
        self.register_buffer("image_mean", torch.tensor(SSD_IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(SSD_IMAGE_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: Tensor, targets=None) -> dict[str, Tensor]:
        x = (images - self.image_mean) / self.image_std
        feats = list(self.backbone(x).values())       # [B, 512, 38, 38], [B, 1024, 19, 19], ..., [B, 256, 1, 1]
        if self.cross_layer is not None:
            feats = self.cross_layer(feats)           # same shapes
        outputs = self.head(feats)
        outputs["anchors"] = self.default_boxes(images, feats)
        return outputs

    def default_boxes(self, images: Tensor, feats: list[Tensor]) -> Tensor:
        """torchvision's DefaultBoxGenerator for this input size: [A, 4] xyxy, normalised by (W, H)."""
        height, width = images.shape[-2:]
        boxes = self.anchor_generator(ImageList(images, [(height, width)]), feats)[0]
        return boxes / boxes.new_tensor([width, height, width, height])

    def deploy(self):
        """Eval mode (nothing to fuse): what export_onnx.py traces."""
        return self.eval()


def build_torchvision_ssd300(num_classes: int, pretrained_backbone=None, fc_init: str = "random") -> SSD:
    """ssd300_vgg16 with num_classes + 1 outputs (background first), no detector weights.

    pretrained_backbone: None (random init: torchvision's xavier), True (torchvision's ImageNet VGG16,
    downloaded once into the torch hub cache) or a local path / URL of a torchvision vgg16 state dict;
    fc_init: which file and how fc6 / fc7 start (pretrained.py: random, or reduced_vgg16 as the SSD paper).
    With ImageNet weights conv1 stays frozen, as ssd300_vgg16 does with them (trainable_backbone_layers=4).
    """
    ssd = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=num_classes + 1)
    if pretrained_backbone:
        load_imagenet_vgg16(ssd.backbone, pretrained_backbone, fc_init, (SSD_IMAGE_MEAN, SSD_IMAGE_STD))
        for p in ssd.backbone.features[:4].parameters():     # conv1_1, conv1_2
            p.requires_grad_(False)
    return ssd


def head_in_channels(ssd: SSD) -> list[int]:
    """Channels of the maps the head reads (512, 1024, 512, 256, 256, 256 for SSD300)."""
    return [conv.in_channels for conv in ssd.head.classification_head.module_list]
