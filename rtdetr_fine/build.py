"""Plain builders: config dict -> model, criterion, postprocessor. Nothing is built elsewhere.

The detector family is chosen here (`detector: rtdetr | ssd300`); train.py / eval.py / export_onnx.py
only see model(images, targets), criterion(outputs, targets) and postprocessor(outputs, sizes).
"""
from torch import nn

from .anydepth.convert import convert_to_anydepth
from .anydepth.distill import DistillationCriterion, FullAndMin
from .anydepth.resnet_adn import ResNetADN, load_adn_pretrained
from .data.coco_ids import COCO_LABEL_TO_CATEGORY
from .modules.adafpn import AdaFPNAlignment
from .modules.cfsam import cfsam_on_maps
from .modules.fapn import FaPNAlignment
from .modules.fine import FINEAlignment
from .modules.mgc import MGCAlignment
from .rtdetr.backbone import PResNet, load_pretrained_backbone
from .rtdetr.criterion import SetCriterion
from .rtdetr.decoder import RTDETRTransformer
from .rtdetr.hybrid_encoder import HybridEncoder
from .rtdetr.matcher import HungarianMatcher
from .rtdetr.model import RTDETR
from .rtdetr.postprocessor import PostProcessor
from .ssd.criterion import SSDCriterion
from .ssd.model import SSD300, build_torchvision_ssd300, head_in_channels
from .ssd.postprocessor import SSDPostProcessor


def num_classes(cfg: dict) -> int:
    """cfg['num_classes'] once resolved: 'auto' is replaced by a count from a class set first
    (rtdetr_fine/data/classes.py: apply_class_set), as train.py / eval.py / predict.py do."""
    n = cfg["num_classes"]
    if not isinstance(n, int):
        raise ValueError(f"num_classes is {n!r}: the class count comes from the training annotation file or a "
                         "checkpoint's class set (train.py, eval.py and predict.py resolve it); set num_classes "
                         "to an integer to build the model without them")
    return n


def build_backbone(cfg: dict) -> nn.Module:
    """PResNet (official), or the any-depth authors' ResNet-ADN (backbone.type resnet_adn), whose ImageNet
    weights build_model loads after the any-depth conversion (they carry the twins)."""
    b = cfg["backbone"]
    if b["type"] == "resnet_adn":
        return ResNetADN(depth=b["depth"], variant=b["variant"], num_stages=b["num_stages"],
                         return_idx=b["return_idx"], freeze_at=b["freeze_at"], freeze_norm=b["freeze_norm"])
    backbone = PResNet(depth=b["depth"], variant=b["variant"], num_stages=b["num_stages"], return_idx=b["return_idx"],
                       freeze_at=b["freeze_at"], freeze_norm=b["freeze_norm"])
    if b["pretrained"]:
        load_pretrained_backbone(backbone, b["pretrained"], b["depth"])
    return backbone


def build_encoder(cfg: dict, in_channels) -> HybridEncoder:
    e = cfg["encoder"]
    if list(e["in_channels"]) != list(in_channels):
        raise ValueError(f"encoder.in_channels {e['in_channels']} does not match the backbone's "
                         f"output channels {in_channels} (backbone.depth {cfg['backbone']['depth']})")
    return HybridEncoder(in_channels=e["in_channels"], feat_strides=e["feat_strides"], hidden_dim=e["hidden_dim"],
                         nhead=e["nhead"], dim_feedforward=e["dim_feedforward"], dropout=e["dropout"],
                         enc_act=e["enc_act"], use_encoder_idx=e["use_encoder_idx"],
                         num_encoder_layers=e["num_encoder_layers"], pe_temperature=e["pe_temperature"],
                         expansion=e["expansion"], depth_mult=e["depth_mult"], act=e["act"])


def build_alignment(cfg: dict):
    """The alignment module that converts the built hybrid encoder (`attach`), or None for the official
    encoder: encoder.alignment, where fine.enabled: true is FINE with the `fine` section's settings."""
    name = "fine" if cfg["fine"]["enabled"] else cfg["encoder"]["alignment"]
    if name == "fine":
        f = cfg["fine"]
        return FINEAlignment(num_heads=f["num_heads"], ffn_ratio=f["ffn_ratio"], attention=f["attention"],
                             modulation=f["modulation"], upsample=f["upsample"])
    table2 = {"fapn": FaPNAlignment, "adafpn": AdaFPNAlignment, "mgc": MGCAlignment}   # the FINE paper's Table 2
    return table2[name]() if name else None


def build_decoder(cfg: dict) -> RTDETRTransformer:
    d = cfg["decoder"]
    return RTDETRTransformer(
        num_classes=num_classes(cfg), hidden_dim=d["hidden_dim"], num_queries=d["num_queries"],
        feat_channels=d["feat_channels"], num_levels=d["num_levels"],
        num_decoder_points=d["num_decoder_points"], nhead=d["nhead"], num_decoder_layers=d["num_decoder_layers"],
        dim_feedforward=d["dim_feedforward"], dropout=d["dropout"], activation=d["activation"],
        num_denoising=d["num_denoising"], label_noise_ratio=d["label_noise_ratio"],
        box_noise_scale=d["box_noise_scale"], learnt_init_query=d["learnt_init_query"], eval_idx=d["eval_idx"],
        eps=d["eps"], aux_loss=d["aux_loss"])


def build_cross_layer(cfg: dict, in_channels):
    """The `cross_layer` module for maps with `in_channels` channels, or None."""
    if cfg["cross_layer"] is None:
        return None
    c = cfg["cfsam"]
    return cfsam_on_maps(in_channels, c["maps"], hidden_dim=c["hidden_dim"], num_layers=c["num_layers"],
                         num_heads=c["num_heads"], dim_feedforward=c["dim_feedforward"], parts=c["parts"],
                         dropout=c["dropout"], components=c["components"])


def build_ssd300(cfg: dict) -> SSD300:
    """torchvision's SSD300 (num_classes + 1 outputs, background first), CFSAM before its head if set."""
    ssd = build_torchvision_ssd300(num_classes(cfg), cfg["backbone"]["pretrained"], cfg["ssd"]["fc_init"])
    return SSD300(ssd, build_cross_layer(cfg, head_in_channels(ssd)))


def build_model(cfg: dict) -> nn.Module:
    """RT-DETR (FINE or another alignment module in the encoder: build_alignment; or a cross-layer
    module on the encoder's output maps; converted to any-depth when cfg['anydepth']['enabled']), or
    SSD300 when cfg['detector'] is 'ssd300'."""
    if cfg["detector"] == "ssd300":
        return build_ssd300(cfg)
    backbone = build_backbone(cfg)
    encoder = build_encoder(cfg, backbone.out_channels)
    alignment = build_alignment(cfg)
    if alignment is not None:
        alignment.attach(encoder)          # its layers under its authors' names, replacing official ones
    cross_layer = build_cross_layer(cfg, cfg["decoder"]["feat_channels"])   # the maps the decoder reads
    model = RTDETR(backbone, encoder, build_decoder(cfg), cross_layer)
    if cfg["anydepth"]["enabled"]:
        model = convert_to_anydepth(model, cfg["anydepth"]["min_decoder_layers"],
                                    cfg["anydepth"]["twins_of_frozen_norms"])
    if cfg["backbone"]["type"] == "resnet_adn" and cfg["backbone"]["pretrained"]:
        load_adn_pretrained(model.backbone, cfg["backbone"]["pretrained"], cfg["backbone"]["depth"])
    return model


ALIGNMENT_NAMES = {"fapn": "FaPN", "adafpn": "AdaFPN", "mgc": "MGC"}


def describe_model(cfg: dict) -> str:
    """One line naming what build_model builds, e.g. 'RT-DETR R18 + FINE (linear_bottleneck)'."""
    if cfg["detector"] == "ssd300":
        name = "SSD300 (VGG16)"
    else:
        name = f"RT-DETR R{cfg['backbone']['depth']}"
        if cfg["backbone"]["type"] == "resnet_adn":
            name += "-ADN"
        if cfg["fine"]["enabled"]:
            name += f" + FINE ({cfg['fine']['attention']})"
        elif cfg["encoder"]["alignment"]:
            name += f" + {ALIGNMENT_NAMES[cfg['encoder']['alignment']]}"
    if cfg["cross_layer"]:
        name += f" + {cfg['cross_layer'].upper()}"
        if cfg["cross_layer"] == "cfsam" and (cfg["cfsam"]["components"] != "full" or cfg["cfsam"]["maps"]):
            name += f" ({cfg['cfsam']['components']}, maps {cfg['cfsam']['maps'] or 'all'})"
    if cfg["anydepth"]["enabled"]:
        name += ", any-depth"
    return name


def build_criterion(cfg: dict) -> nn.Module:
    if cfg["detector"] == "ssd300":
        s = cfg["ssd"]
        return SSDCriterion(s["weight_dict"], iou_thresh=s["iou_thresh"], positive_fraction=s["positive_fraction"])
    c = cfg["criterion"]
    m = c["matcher"]
    matcher = HungarianMatcher(cost_class=m["cost_class"], cost_bbox=m["cost_bbox"], cost_giou=m["cost_giou"],
                               alpha=m["alpha"], gamma=m["gamma"])
    return SetCriterion(matcher, c["weight_dict"], c["losses"], alpha=c["alpha"], gamma=c["gamma"],
                        num_classes=num_classes(cfg))


def build_postprocessor(cfg: dict) -> nn.Module:
    # remap_mscoco_category: labels 0..79 leave the post-processor as COCO category ids (the official behaviour)
    label_to_category = COCO_LABEL_TO_CATEGORY if cfg["remap_mscoco_category"] else None
    if cfg["detector"] == "ssd300":
        s = cfg["ssd"]
        return SSDPostProcessor(num_classes(cfg), score_thresh=s["score_thresh"], nms_thresh=s["nms_thresh"],
                                detections_per_img=s["detections_per_img"], topk_candidates=s["topk_candidates"],
                                label_to_category=label_to_category)
    return PostProcessor(num_classes=num_classes(cfg), num_top_queries=cfg["postprocessor"]["num_top_queries"],
                         label_to_category=label_to_category)


def build_training(cfg: dict, model: nn.Module, criterion: nn.Module) -> tuple:
    """(module, criterion) that train.py optimises: any-depth configs with anydepth.distill train the
    full and the smallest network by self-distillation (rtdetr_fine/anydepth/distill.py); others the model itself."""
    if cfg["detector"] == "rtdetr" and cfg["anydepth"]["enabled"] and cfg["anydepth"]["distill"]:
        return FullAndMin(model), DistillationCriterion(criterion, cfg["anydepth"]["distill_weight_dict"],
                                                        cfg["anydepth"]["distill_reduction"])
    return model, criterion
