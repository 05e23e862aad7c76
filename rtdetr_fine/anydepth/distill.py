"""Any-depth RT-DETR training: self-distillation from the full network into the smallest one.

The any-depth detection paper (seed 001, second abstract) trains only the two extremes of an
any-depth model, because optimising many sub-networks at once gives conflicting gradients, "with
prediction-level and feature-level alignment losses". Facts from the authors' code
(HyungseopLee/Dynamic-Routing-AnyDepthYOLO, anydepth-rt-detr: det_engine.py, rtdetr_criterion.py),
re-implemented here. Every iteration, on the same images (with anydepth.independent_scales each
pass at its own multi-scale size, as theirs):

  L = L_DETR(full; GT)                                                       the usual RT-DETR loss
    + 1 * s * sum_pairs KL(softmax(z_full) || softmax(z_min)) / N             class distributions
    + 5 * sum_pairs |b_full - b_min|_1 / N + 2 * sum_pairs (1 - GIoU(b_full, b_min)) / N
    + 1 * KL(softmax(gap(backbone_full)) || softmax(gap(backbone_min)))       batch mean
    + 1 * KL(softmax(gap(encoder_full)) || softmax(gap(encoder_min)))         batch mean
    + L_DETR(min's auxiliary decoder layers, encoder proposals, denoising; GT)

* full: no skips; min: every backbone stage and the neck skip (all decoder layers: training always
  runs them). The full network's outputs are the teacher: detached in every alignment term.
* pairs (final decoder layer): both networks' queries are Hungarian-matched to the ground truth
  with the training matcher; a full-network query and a min-network query are a pair when they are
  matched to the same ground-truth box. N = boxes per process averaged over processes, as in L_DETR.
* s, the class term's reduction (anydepth.distill_reduction): "authors" averages the pointwise KL
  over the C classes and multiplies by the Q queries (their VFL normalisation), s = Q / C (3.75 on
  COCO); "plain" (this project's variant) takes the KL of the two distributions itself, s = 1.
* GIoU as the detection loss computes it (no epsilon, as the authors').
* gap: global average pooling of each level, the levels concatenated along channels, then one
  softmax over all channels ([B, sum C]); KL averaged over the batch. "authors" also keeps their
  quirk for one image per process: their `squeeze` drops the batch axis, so the mean is over the
  channels.

Where this differs from the authors' code (see docs/anydepth.md):
* one backward of the summed loss instead of two (full loss, then min loss): the same gradients
  (the teacher is detached; tests/anydepth/test_distill.py compares the two), and
  DistributedDataParallel sees one forward and one backward.
"""
import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou

from ..data.collate import pass_sizes, resize_batch
from ..rtdetr.criterion import SetCriterion, _average_num_boxes, _src_permutation_idx
from .convert import layout_of
from .depth import using_depth

FEATURE_MODULES = ("backbone", "encoder")      # their outputs are aligned: 3 maps each (strides 8/16/32)
DISTILL_TERMS = ("loss_kd_class", "loss_kd_bbox", "loss_kd_giou", "loss_kd_feat_backbone", "loss_kd_feat_encoder")
REDUCTIONS = ("plain", "authors")              # config anydepth.distill_reduction


class FullAndMin(nn.Module):
    """Training forward of an any-depth RT-DETR: the full network, then the smallest one, on the same batch.

    One module, so DistributedDataParallel sees one forward (and one backward of the summed loss):
    together the two passes use every parameter (skippable blocks and main norms in `full`, the
    switchable norms' skip twins in `min`), so no parameter goes unused because of a skip.
    Returns {"full": outputs, "min": outputs}; each also carries "backbone_feats" and "encoder_feats".
    The detector is `self.detector` (distributed.unwrap returns it: checkpoints and EMA see the detector).
    With anydepth.independent_scales the batch comes at the transforms' size with a size per pass
    (data/collate.py, pass_sizes), and each pass resizes it to its own, as the authors' model resizes
    its input in each forward.
    """

    def __init__(self, detector: nn.Module):
        super().__init__()
        self.detector = detector
        layout_of(detector)   # a clear error for a model that is not any-depth

    def forward(self, images: torch.Tensor, targets=None) -> dict:
        layout = layout_of(self.detector)
        sizes = pass_sizes(targets, 2)
        outputs = {}
        for i, (name, depth) in enumerate((("full", layout.full), ("min", layout.min))):
            x = images if sizes is None else resize_batch(images, sizes[i])
            with using_depth(self.detector, depth), recording_outputs(self.detector, FEATURE_MODULES) as feats:
                out = self.detector(x, targets)
            out.update({f"{m}_feats": list(feats[m]) for m in FEATURE_MODULES})
            outputs[name] = out
        return outputs


@contextlib.contextmanager
def recording_outputs(model: nn.Module, names: tuple) -> Iterator[dict]:
    """Inside the block, {name: output of model.<name>} of the last forward (forward hooks)."""
    recorded = {}

    def hook(name):
        return lambda module, args, output: recorded.__setitem__(name, output)

    handles = [getattr(model, name).register_forward_hook(hook(name)) for name in names]
    try:
        yield recorded
    finally:
        for handle in handles:
            handle.remove()


class DistillationCriterion(nn.Module):
    """L_DETR on `full` + alignment of `min` to `full` + L_DETR on `min`'s auxiliary and denoising outputs.

    base: the model's SetCriterion (matcher, weights of the GT terms). weight_dict: the alignment
    terms' weights (DISTILL_TERMS; config anydepth.distill_weight_dict). reduction: "plain" | "authors"
    (module docstring; config anydepth.distill_reduction). The min network's GT terms are named like
    the full one's with a "min_" prefix (min_loss_vfl_aux_0, min_loss_bbox_dn_1, ...).
    """

    def __init__(self, base: SetCriterion, weight_dict: dict, reduction: str = "plain"):
        super().__init__()
        unknown = set(weight_dict) - set(DISTILL_TERMS)
        if unknown:
            raise ValueError(f"anydepth.distill_weight_dict: unknown term(s) {sorted(unknown)}; "
                             f"expected {', '.join(DISTILL_TERMS)}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"anydepth.distill_reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.base, self.weight_dict, self.reduction = base, dict(weight_dict), reduction

    def forward(self, outputs: dict, targets: list) -> dict:
        teacher, student = outputs["full"], outputs["min"]
        losses = self.base(_detection_outputs(teacher), targets)
        num_boxes = _average_num_boxes(targets, student["pred_logits"].device)
        terms = {**self.prediction_alignment(teacher, student, targets, num_boxes),
                 **{f"loss_kd_feat_{m}": pooled_feature_kl(student[f"{m}_feats"], teacher[f"{m}_feats"], self.reduction)
                    for m in FEATURE_MODULES}}
        losses.update({k: v * self.weight_dict[k] for k, v in terms.items() if k in self.weight_dict})
        min_auxiliary = self.base.auxiliary_losses(student, targets, num_boxes)   # decoder layers, proposals, denoising
        losses.update({f"min_{k}": v for k, v in min_auxiliary.items()})
        return losses

    def prediction_alignment(self, teacher: dict, student: dict, targets: list, num_boxes: float) -> dict:
        """Class KL (times Q / C with the authors' reduction), L1 and 1 - GIoU between the final-layer
        queries of both networks that are matched to the same ground-truth box; sums over the pairs
        / num_boxes (unweighted)."""
        t_final, s_final = _final_layer(teacher), _final_layer(student)
        pairs = pair_by_ground_truth(self.base.matcher(t_final, targets), self.base.matcher(s_final, targets),
                                     [len(t["labels"]) for t in targets])
        t_idx = _src_permutation_idx(pairs)                                   # (image [P], query [P])
        s_idx = _src_permutation_idx([(s_query, t_query) for t_query, s_query in pairs])
        t_logits, s_logits = t_final["pred_logits"][t_idx].detach(), s_final["pred_logits"][s_idx]   # [P, classes]
        t_boxes, s_boxes = t_final["pred_boxes"][t_idx].detach(), s_final["pred_boxes"][s_idx]       # [P, 4] cxcywh
        kl = F.kl_div(F.log_softmax(s_logits, -1), F.log_softmax(t_logits, -1), reduction="sum", log_target=True)
        queries, classes = s_final["pred_logits"].shape[1:]
        scale = queries / classes if self.reduction == "authors" else 1.0    # their mean over classes, x queries
        l1 = F.l1_loss(s_boxes, t_boxes, reduction="sum")
        giou = generalized_box_iou(box_convert(s_boxes, "cxcywh", "xyxy"), box_convert(t_boxes, "cxcywh", "xyxy"))
        return {"loss_kd_class": kl * scale / num_boxes, "loss_kd_bbox": l1 / num_boxes,
                "loss_kd_giou": (1 - giou.diagonal()).sum() / num_boxes}


def pair_by_ground_truth(teacher_indices: list, student_indices: list, num_targets: list) -> list:
    """Per image (teacher query indices [P], student query indices [P]): the queries the two
    matchings assign to the same ground-truth box, in the student matching's order.

    *_indices: the matcher's per-image (query indices, ground-truth indices); a box one of the
    matchings leaves unmatched (fewer queries than boxes) has no pair."""
    pairs = []
    for (t_query, t_gt), (s_query, s_gt), n in zip(teacher_indices, student_indices, num_targets):
        teacher_of_gt = torch.full((n,), -1, dtype=torch.int64, device=t_query.device)
        teacher_of_gt[t_gt] = t_query
        paired = teacher_of_gt[s_gt]
        keep = paired >= 0
        pairs.append((paired[keep], s_query[keep]))
    return pairs


def pooled_feature_kl(student_maps: list, teacher_maps: list, reduction: str = "plain") -> torch.Tensor:
    """KL(softmax(t) || softmax(s)) averaged over the batch, where s, t [B, sum C] are the maps
    [B, C_l, H_l, W_l] global-average-pooled and concatenated over the levels; the teacher detached.
    reduction "authors" with B = 1: averaged over the sum C channels instead (their `squeeze` drops the
    batch axis of one image, and their "batchmean" then divides by the length of the vector)."""
    s = torch.cat([F.adaptive_avg_pool2d(m, 1).flatten(1) for m in student_maps], 1)
    t = torch.cat([F.adaptive_avg_pool2d(m, 1).flatten(1) for m in teacher_maps], 1).detach()
    kl = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), reduction="sum", log_target=True)
    batch, channels = s.shape
    return kl / (channels if reduction == "authors" and batch == 1 else batch)


def _final_layer(outputs: dict) -> dict:
    return {"pred_logits": outputs["pred_logits"], "pred_boxes": outputs["pred_boxes"]}


def _detection_outputs(outputs: dict) -> dict:
    """The model's outputs without the recorded feature maps (what SetCriterion reads)."""
    return {k: v for k, v in outputs.items() if not k.endswith("_feats")}
