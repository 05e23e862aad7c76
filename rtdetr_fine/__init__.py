"""rtdetr-fine: RT-DETR, number for number the official implementation, with FINE feature interaction.

    cfg = rtdetr_fine.load_config("configs/rtdetr_r18_fine.yml", ["fine.attention=linear"])
    model = rtdetr_fine.build_model(cfg)
"""
from .build import build_criterion, build_model, build_postprocessor, build_training, describe_model
from .config import ConfigError, load_config

__all__ = ["load_config", "build_model", "build_criterion", "build_postprocessor", "build_training", "describe_model", "ConfigError"]
