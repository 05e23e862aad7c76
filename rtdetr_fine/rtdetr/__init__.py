"""The RT-DETR family (Zhao et al., CVPR 2024), number for number the official v1 model.

backbone.py        PResNet (ResNet-vd 18/34/50/101)
hybrid_encoder.py  AIFI + CCFF; the hooks the papers' alignment modules (FINE, FaPN, AdaFPN, MGC) plug into
decoder.py         query selection, deformable decoder, iterative box refinement
denoising.py       contrastive denoising groups
matcher.py         Hungarian matcher
criterion.py       VFL + L1 + GIoU with auxiliary and denoising terms
postprocessor.py   top-k over queries x classes, boxes to pixels
model.py           RTDETR = backbone -> encoder -> decoder
"""
from .model import RTDETR

__all__ = ["RTDETR"]
