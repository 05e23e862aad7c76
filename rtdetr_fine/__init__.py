"""rtdetr-fine: RT-DETR, number for number the official implementation, with FINE feature interaction.

    cfg = rtdetr_fine.load_config("configs/rtdetr_r18_fine.yml", ["fine.attention=linear"])
    model = rtdetr_fine.build_model(cfg)

The package has a folder per part (see README, "Layout"): nn/ (shared layers), rtdetr/ and ssd/
(the detector families), modules/ (the papers' plug-ins), anydepth/, data/, engine/ (training),
evaluation/; at the top: config, build, checkpoint, cli, deploy, predictor, distributed.
"""
import importlib
import sys

from .build import build_criterion, build_model, build_postprocessor, build_training, describe_model
from .checkpoint import load_weights
from .config import ConfigError, load_config

__all__ = ["load_config", "build_model", "build_criterion", "build_postprocessor", "build_training",
           "describe_model", "load_weights", "ConfigError"]

# Modules that sat at the top of the package before the folders: their old import paths
# (`rtdetr_fine.loaders`, `rtdetr_fine.fine`, ...) keep working for scripts written against them.
_MOVED = {
    "layers": "nn.layers", "position_encoding": "nn.position_encoding",
    "deformable_attention": "nn.deformable_attention", "backbone": "rtdetr.backbone",
    "hybrid_encoder": "rtdetr.hybrid_encoder", "decoder": "rtdetr.decoder", "denoising": "rtdetr.denoising",
    "matcher": "rtdetr.matcher", "criterion": "rtdetr.criterion", "postprocessor": "rtdetr.postprocessor",
    "fine": "modules.fine", "cfsam": "modules.cfsam", "distill": "anydepth.distill", "classes": "data.classes",
    "coco_ids": "data.coco_ids", "loaders": "data.loaders", "class_source": "checkpoint",
    "optim": "engine.optim", "training_state": "engine.training_state", "run_dir": "engine.run_dir",
    "analysis": "evaluation.analysis", "flops": "evaluation.flops", "reference": "evaluation.reference",
}
for _old, _new in _MOVED.items():
    sys.modules[f"{__name__}.{_old}"] = importlib.import_module(f"{__name__}.{_new}")
    globals().setdefault(_old, sys.modules[f"{__name__}.{_old}"])
del _old, _new
