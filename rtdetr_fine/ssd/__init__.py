"""The SSD300 family: torchvision's ssd300_vgg16 behind this repo's model / criterion / post-processor
interfaces (model.py, criterion.py, postprocessor.py), and ImageNet VGG16 weights for its extractor (pretrained.py)."""
from .criterion import SSDCriterion, to_ssd_targets
from .model import SSD300, build_torchvision_ssd300, head_in_channels
from .pretrained import load_vgg16_features, read_state_dict
from .postprocessor import SSDPostProcessor

__all__ = ["SSD300", "SSDCriterion", "SSDPostProcessor", "build_torchvision_ssd300", "head_in_channels",
           "load_vgg16_features", "read_state_dict", "to_ssd_targets"]
