"""RT-DETR (Zhao et al., CVPR 2024): backbone -> hybrid encoder -> decoder."""
from torch import nn


class RTDETR(nn.Module):
    """images [B, 3, H, W] in [0, 1] (H, W multiples of 32) -> {'pred_logits', 'pred_boxes', ...}."""

    def __init__(self, backbone: nn.Module, encoder: nn.Module, decoder: nn.Module,
                 cross_layer: nn.Module | None = None):
        super().__init__()
        # registration order = state-dict order; the official one is backbone, decoder, encoder
        self.backbone = backbone
        self.decoder = decoder
        self.encoder = encoder
        self.cross_layer = cross_layer         # optional (e.g. CFSAM) on the encoder's maps; None: no weights

    def forward(self, images, targets=None):
        feats = self.backbone(images)          # strides 8/16/32
        feats = self.encoder(feats)            # 3 x [B, 256, H/s, W/s]
        if self.cross_layer is not None:
            feats = self.cross_layer(feats)    # same shapes
        return self.decoder(feats, targets)

    def deploy(self):
        """Eval mode, with every module that has a deploy form converted to it (same outputs):
        e.g. RepVGG blocks fuse their two branches into one 3x3 conv."""
        self.eval()
        for m in list(self.modules()):
            if hasattr(m, "convert_to_deploy"):
                m.convert_to_deploy()
        return self
