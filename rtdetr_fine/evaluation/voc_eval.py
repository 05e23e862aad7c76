"""PASCAL VOC detection AP, as the VOC devkit defines it (VOCevaldet.m, VOCap.m), on a COCO-format
annotation dict and detections in the COCO results format. Written from the definition, in numpy.

Per class, over the evaluated images (Everingham et al., IJCV 2010, Sec. 4.2):

  1. the class's detections are sorted by descending score (a stable sort: ties keep the order of
     the results, as MATLAB's sort does);
  2. each detection is compared with the ground-truth box of its class in its image that it overlaps
     most. Every box of the class competes, difficult ones and ones already detected too (COCO
     instead skips boxes already matched):
       IoU >= 0.5, the box is difficult          -> ignored (neither true nor false positive);
       IoU >= 0.5, the box not yet detected      -> true positive; the box is now detected;
       IoU >= 0.5, the box already detected      -> false positive (a duplicate);
       IoU <  0.5 or no box of the class there   -> false positive;
  3. recall = cumulative TP / the class's non-difficult boxes, precision = cumulative TP /
     cumulative (TP + FP);
  4. AP, `voc07` (VOC2007's 11-point interpolation): the mean over t = 0, 0.1, ..., 1 of the largest
     precision at recall >= t (0 where recall never reaches t); `voc` (VOC2010 onwards): the area
     under the precision envelope (precision made non-increasing from the right), summed over the
     recall steps.

mAP is the mean of the per-class APs over every category of the annotation file.

Conventions (what our files and the definition leave to choose):
  * difficult objects are the annotations with iscrowd: 1 (tools/voc_to_coco.py writes them so);
  * the devkit measures boxes in inclusive pixels (+1 on every width and height). The conversion's
    [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1] makes that overlap equal the plain IoU of
    the COCO boxes, and a detection [x, y, w, h] stands for the devkit's [x + 1, y + 1, x + w, y + h];
  * no cap on detections per image (the devkit has none);
  * the 11 recall levels are 0.1 * k in floating point (np.arange(0, 1.1, 0.1), the devkit's Python
    port): 0.1 * 3, 0.1 * 6 and 0.1 * 7 lie a hair above 0.3, 0.6 and 0.7, so a recall of exactly
    3/10 does not reach t = 0.3;
  * precision before any detection has counted (only ignored ones so far) is 0, where the devkit
    divides 0 by 0; this changes no AP except that a class whose detections are all ignored gets
    AP 0 instead of NaN;
  * a class with no non-difficult box on the evaluated images gets AP 0 (recall is never reached; the
    devkit's 11-point formula gives 0 too) and counts in the mean, as the devkit averages all classes.
"""
from typing import NamedTuple

import numpy as np

from .analysis import xywh_iou

VOC_METRICS = ("voc07", "voc")
IOU_THRESHOLD = 0.5
# The 11 recall levels of VOC2007, with their floating-point values (see the module docstring).
ELEVEN_RECALL_LEVELS = np.linspace(0.0, 1.0, 11)


class VOCResult(NamedTuple):
    metric: str        # voc07 | voc
    mAP: float         # mean of `ap` over all categories
    ap: dict           # {category id: AP}
    objects: dict      # {category id: non-difficult ground-truth boxes on the evaluated images}


def eleven_point_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2007 AP: mean over the 11 recall levels t of max(precision[recall >= t]) (0 if none)."""
    return float(sum(precision[recall >= t].max(initial=0.0) for t in ELEVEN_RECALL_LEVELS) / 11)


def area_under_envelope(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2010+ AP (VOCap.m): recall framed by 0 and 1, precision by 0 and 0; the precision made
    non-increasing from the right; the sum of (recall step) x (envelope at the step's end)."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    envelope = np.maximum.accumulate(p[::-1])[::-1]
    steps = np.flatnonzero(r[1:] != r[:-1]) + 1
    return float(np.sum((r[steps] - r[steps - 1]) * envelope[steps]))


def precision_recall(tp: np.ndarray, fp: np.ndarray, num_objects: int) -> tuple:
    """Step 3 for one class: (recall [D], precision [D]) after each detection in score order, from their
    TP / FP flags (both 0 = ignored) and the class's non-difficult boxes (> 0)."""
    true_pos, false_pos = np.cumsum(tp), np.cumsum(fp)
    recall = true_pos / num_objects
    counted = true_pos + false_pos
    precision = np.divide(true_pos, counted, out=np.zeros_like(true_pos), where=counted > 0)
    return recall, precision


def average_precision(tp: np.ndarray, fp: np.ndarray, num_objects: int, metric: str) -> float:
    """AP of one class from its detections' TP / FP flags in score order (both 0 = ignored)."""
    if metric not in VOC_METRICS:
        raise ValueError(f"unknown VOC metric {metric!r}; expected one of {VOC_METRICS}")
    if num_objects == 0:
        return 0.0
    recall, precision = precision_recall(tp, fp, num_objects)
    return eleven_point_ap(recall, precision) if metric == "voc07" else area_under_envelope(recall, precision)


def rows_by_key(keys: np.ndarray) -> dict:
    """{key: the indices of its rows, ascending} for an integer array."""
    order = np.argsort(keys, kind="stable")
    unique, starts = np.unique(keys[order], return_index=True)
    return dict(zip(unique.tolist(), np.split(order, starts[1:])))


def detection_outcomes(det_images: np.ndarray, det_boxes: np.ndarray, gt_images: np.ndarray, gt_boxes: np.ndarray,
                       gt_difficult: np.ndarray, iou_threshold: float = IOU_THRESHOLD) -> tuple:
    """Step 2 for one class: (tp [D], fp [D]) as 0/1 floats for detections given in score order.

    det_images [D], det_boxes [D, 4] xywh; gt_images [G], gt_boxes [G, 4] xywh, gt_difficult [G] bool.
    Which box a detection overlaps most does not depend on the others, so it is found per image at
    once; then, in score order, the first detection to claim a non-difficult box gets it.
    """
    num = len(det_images)
    best_iou, best_box = np.full(num, -1.0), np.full(num, -1, dtype=np.int64)
    det_groups, gt_groups = rows_by_key(det_images), rows_by_key(gt_images)
    for image in det_groups.keys() & gt_groups.keys():
        dets, gts = det_groups[image], gt_groups[image]
        ious = xywh_iou(det_boxes[dets], gt_boxes[gts])                      # [d, g]
        best_box[dets] = gts[ious.argmax(axis=1)]                            # the first box on a tie
        best_iou[dets] = ious.max(axis=1)
    hit = best_iou >= iou_threshold
    ignored = np.zeros(num, dtype=bool)
    ignored[hit] = gt_difficult[best_box[hit]]
    claims = np.flatnonzero(hit & ~ignored)
    _, first = np.unique(best_box[claims], return_index=True)                # first claim of each box
    tp = np.zeros(num)
    tp[claims[first]] = 1.0
    fp = (~ignored & (tp == 0)).astype(np.float64)
    return tp, fp


def class_outcomes(gt: dict, detections: list, img_ids=None, iou_threshold: float = IOU_THRESHOLD) -> dict:
    """Steps 1-2 for every category of `gt`: {category id: (tp [D], fp [D], non-difficult boxes)}, the
    flags of the category's detections in score order (detection_outcomes). `detections` are COCO
    results (image_id, category_id, bbox xywh, score), `gt` a COCO annotation dict (difficult objects
    as iscrowd: 1); only the images img_ids count (default: all of gt's)."""
    images = {int(i) for i in (img_ids if img_ids is not None else [im["id"] for im in gt["images"]])}
    anns = [a for a in gt["annotations"] if a["image_id"] in images]
    gt_cats = np.array([a["category_id"] for a in anns], dtype=np.int64)
    gt_images = np.array([a["image_id"] for a in anns], dtype=np.int64)
    gt_boxes = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    gt_difficult = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)

    dets = [d for d in detections if d["image_id"] in images]
    det_cats = np.array([d["category_id"] for d in dets], dtype=np.int64)
    det_images = np.array([d["image_id"] for d in dets], dtype=np.int64)
    det_boxes = np.array([d["bbox"] for d in dets], dtype=np.float64).reshape(-1, 4)
    det_scores = np.array([d["score"] for d in dets], dtype=np.float64)

    outcomes = {}
    for category in sorted(c["id"] for c in gt["categories"]):
        g = gt_cats == category                         # boxes in the file's order (the devkit's jmax tie rule)
        d = np.flatnonzero(det_cats == category)
        d = d[np.argsort(-det_scores[d], kind="stable")]
        tp, fp = detection_outcomes(det_images[d], det_boxes[d], gt_images[g], gt_boxes[g], gt_difficult[g],
                                    iou_threshold)
        outcomes[category] = (tp, fp, int((~gt_difficult[g]).sum()))
    return outcomes


def voc_eval(gt: dict, detections: list, metric: str = "voc07", img_ids=None,
             iou_threshold: float = IOU_THRESHOLD) -> VOCResult:
    """VOC AP per category and mAP of `detections` (COCO results: image_id, category_id, bbox xywh,
    score) against `gt` (a COCO annotation dict, difficult objects as iscrowd: 1), over the images
    img_ids (default: all of gt's). Detections on other images or categories are not scored."""
    if metric not in VOC_METRICS:
        raise ValueError(f"unknown VOC metric {metric!r}; expected one of {VOC_METRICS}")
    outcomes = class_outcomes(gt, detections, img_ids, iou_threshold)
    ap = {c: average_precision(tp, fp, n, metric) for c, (tp, fp, n) in outcomes.items()}
    objects = {c: n for c, (_, _, n) in outcomes.items()}
    mean = float(np.mean(list(ap.values()))) if ap else 0.0
    return VOCResult(metric, mean, ap, objects)
