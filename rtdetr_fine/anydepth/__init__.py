"""Any-depth RT-DETR: a conversion of a built RT-DETR (convert.py), its switchable norms (norms.py),
depth specs (depth.py), the self-distillation that trains it (distill.py), the per-depth deploy form
(deploy.py) and the authors' backbone ResNet-ADN (resnet_adn.py)."""
from .convert import (AnyDepthLayout, Depth, DepthSpecError, SkippableSequential, SkippableStage,
                      convert_to_anydepth, count_depth_params, essential_blocks, is_anydepth, layout_of)
from .deploy import SwitchableConv2d, SwitchableRepVggBlock
from .depth import (benchmark_depths, depth_spec, depth_tag, describe_depth, get_depth, parse_depth,
                    resolve_depths, set_depth, using_depth)
from .norms import (Switchable, SwitchableBatchNorm2d, SwitchableFrozenBatchNorm2d, SwitchableLayerNorm,
                    SwitchableNorm, SwitchableSyncBatchNorm, convert_sync_batchnorm, copy_main_to_skip,
                    init_skip_norms_from_main, make_switchable)
from .resnet_adn import ResNetADN, load_adn_pretrained

__all__ = [
    "AnyDepthLayout", "Depth", "DepthSpecError", "ResNetADN", "SkippableSequential", "SkippableStage", "Switchable",
    "SwitchableBatchNorm2d", "SwitchableConv2d", "SwitchableFrozenBatchNorm2d", "SwitchableLayerNorm",
    "SwitchableNorm", "SwitchableRepVggBlock", "SwitchableSyncBatchNorm", "benchmark_depths",
    "convert_sync_batchnorm", "convert_to_anydepth", "copy_main_to_skip", "count_depth_params", "depth_spec",
    "depth_tag", "describe_depth", "essential_blocks", "get_depth", "init_skip_norms_from_main", "is_anydepth",
    "layout_of", "load_adn_pretrained", "make_switchable", "parse_depth", "resolve_depths", "set_depth",
    "using_depth",
]
