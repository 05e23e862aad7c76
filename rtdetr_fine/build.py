"""Plain builders: config dict -> model, criterion, postprocessor. Nothing is built elsewhere."""
from .anydepth import convert_to_anydepth
from .backbone import PResNet, load_pretrained_backbone
from .criterion import SetCriterion
from .decoder import RTDETRTransformer
from .hybrid_encoder import HybridEncoder
from .matcher import HungarianMatcher
from .postprocessor import PostProcessor
from .rtdetr import RTDETR


def build_backbone(cfg):
    b = cfg["backbone"]
    backbone = PResNet(depth=b["depth"], variant=b["variant"], num_stages=b["num_stages"], return_idx=b["return_idx"],
                       freeze_at=b["freeze_at"], freeze_norm=b["freeze_norm"])
    if b["pretrained"]:
        load_pretrained_backbone(backbone, b["pretrained"], b["depth"])
    return backbone


def build_encoder(cfg, in_channels):
    e = cfg["encoder"]
    if list(e["in_channels"]) != list(in_channels):
        raise ValueError(f"encoder.in_channels {e['in_channels']} does not match the backbone's "
                         f"output channels {in_channels} (backbone.depth {cfg['backbone']['depth']})")
    return HybridEncoder(in_channels=e["in_channels"], feat_strides=e["feat_strides"], hidden_dim=e["hidden_dim"],
                         nhead=e["nhead"], dim_feedforward=e["dim_feedforward"], dropout=e["dropout"],
                         enc_act=e["enc_act"], use_encoder_idx=e["use_encoder_idx"],
                         num_encoder_layers=e["num_encoder_layers"], pe_temperature=e["pe_temperature"],
                         expansion=e["expansion"], depth_mult=e["depth_mult"], act=e["act"], fine=cfg["fine"])


def build_decoder(cfg):
    d = cfg["decoder"]
    return RTDETRTransformer(
        num_classes=cfg["num_classes"], hidden_dim=d["hidden_dim"], num_queries=d["num_queries"],
        feat_channels=d["feat_channels"], feat_strides=d["feat_strides"], num_levels=d["num_levels"],
        num_decoder_points=d["num_decoder_points"], nhead=d["nhead"], num_decoder_layers=d["num_decoder_layers"],
        dim_feedforward=d["dim_feedforward"], dropout=d["dropout"], activation=d["activation"],
        num_denoising=d["num_denoising"], label_noise_ratio=d["label_noise_ratio"],
        box_noise_scale=d["box_noise_scale"], learnt_init_query=d["learnt_init_query"], eval_idx=d["eval_idx"],
        eps=d["eps"], aux_loss=d["aux_loss"])


def build_model(cfg):
    """RT-DETR (with FINE in the encoder when cfg['fine']['enabled']; any-depth when cfg['anydepth']['enabled'])."""
    backbone = build_backbone(cfg)
    encoder = build_encoder(cfg, backbone.out_channels)
    model = RTDETR(backbone, encoder, build_decoder(cfg))
    if cfg["anydepth"]["enabled"]:
        model = convert_to_anydepth(model, cfg["anydepth"]["min_decoder_layers"])
    return model


def build_criterion(cfg):
    c = cfg["criterion"]
    m = c["matcher"]
    matcher = HungarianMatcher(cost_class=m["cost_class"], cost_bbox=m["cost_bbox"], cost_giou=m["cost_giou"],
                               alpha=m["alpha"], gamma=m["gamma"])
    return SetCriterion(matcher, c["weight_dict"], c["losses"], alpha=c["alpha"], gamma=c["gamma"],
                        num_classes=cfg["num_classes"])


def build_postprocessor(cfg):
    return PostProcessor(num_classes=cfg["num_classes"], num_top_queries=cfg["postprocessor"]["num_top_queries"],
                         remap_mscoco_category=cfg["remap_mscoco_category"])
