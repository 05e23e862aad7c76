"""Building blocks shared by the detector families and the papers' modules: conv-norm layers and
MLPs (layers.py), 2-D sin-cos position embeddings (position_encoding.py) and multi-scale
deformable attention (deformable_attention.py); reading a backbone's pretrained weights file
(pretrained.py, config key backbone.pretrained)."""
