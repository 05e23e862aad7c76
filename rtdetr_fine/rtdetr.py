"""RT-DETR (Zhao et al., CVPR 2024): backbone -> hybrid encoder -> decoder."""
from torch import nn

from .hybrid_encoder import RepVggBlock


class RTDETR(nn.Module):
    """images [B, 3, H, W] in [0, 1] (H, W multiples of 32) -> {'pred_logits', 'pred_boxes', ...}."""

    def __init__(self, backbone, encoder, decoder):
        super().__init__()
        # registration order = state-dict order; the official one is backbone, decoder, encoder
        self.backbone = backbone
        self.decoder = decoder
        self.encoder = encoder

    def forward(self, images, targets=None):
        feats = self.backbone(images)          # strides 8/16/32
        feats = self.encoder(feats)            # 3 x [B, 256, H/s, W/s]
        return self.decoder(feats, targets)

    def deploy(self):
        """Eval mode with every RepVGG block fused into a single 3x3 conv (same outputs)."""
        self.eval()
        for m in self.modules():
            if isinstance(m, RepVggBlock):
                m.convert_to_deploy()
        return self
