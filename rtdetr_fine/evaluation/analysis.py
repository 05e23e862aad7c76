"""The FINE paper's Fig. 4 analyses, computed from one evaluation run.

Fig. 4 (left): false positives per image at a confidence threshold of 0.5 on COCO val2017
  (the paper reports 81,013 -> 77,026 in total, i.e. 0.8 fewer per image with FINE).
  The paper does not spell out its matching; `count_false_positives` states ours.
Fig. 4 (right): AP by object size (small / medium / large), where the paper finds FINE's
  gain largest for small objects. `ap_by_size` gives COCO's APs/APm/APl, plus AP50 and
  AP75 per size and the number of ground-truth boxes in each size range.

Boxes are COCO [x, y, w, h] in pixels of the original image throughout.
"""
from collections import defaultdict

import numpy as np

SIZE_NAMES = ("small", "medium", "large")
# COCO's area ranges (pixels^2, bounds inclusive as in COCOeval): the same objects may sit on a boundary of two.
COCO_AREA_RANGES = {"small": (0, 32 ** 2), "medium": (32 ** 2, 96 ** 2), "large": (96 ** 2, 1e10)}


def xywh_iou(boxes1, boxes2):
    """IoU matrix [N, M] of boxes1 [N, 4] and boxes2 [M, 4] (xywh)."""
    inter = _intersection(boxes1, boxes2)
    area1 = boxes1[:, 2] * boxes1[:, 3]
    area2 = boxes2[:, 2] * boxes2[:, 3]
    union = area1[:, None] + area2[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def xywh_ioa(boxes, regions):
    """Intersection over the area of `boxes` [N, 4] with `regions` [M, 4] -> [N, M] (COCO's crowd overlap)."""
    inter = _intersection(boxes, regions)
    area = boxes[:, 2] * boxes[:, 3]
    return np.where(area[:, None] > 0, inter / np.maximum(area[:, None], 1e-12), 0.0)


def _intersection(boxes1, boxes2):
    """Intersection areas [N, M] of xywh boxes."""
    lt = np.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = np.minimum(boxes1[:, None, :2] + boxes1[:, None, 2:], boxes2[None, :, :2] + boxes2[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    return wh[..., 0] * wh[..., 1]


def match_detections(det_boxes, gt_boxes, crowd_boxes, iou_threshold=0.5):
    """Greedy matching in one image and one category.

    det_boxes [D, 4] sorted by descending score; gt_boxes [G, 4] (non-crowd); crowd_boxes [C, 4].
    Returns a list of D outcomes, each "tp", "fp" or "ignored" (see count_false_positives).
    """
    det_boxes, gt_boxes, crowd_boxes = (np.asarray(b, dtype=np.float64).reshape(-1, 4)
                                        for b in (det_boxes, gt_boxes, crowd_boxes))
    ious = xywh_iou(det_boxes, gt_boxes)          # [D, G]
    ioas = xywh_ioa(det_boxes, crowd_boxes)       # [D, C]
    taken = np.zeros(len(gt_boxes), dtype=bool)
    outcomes = []
    for d in range(len(det_boxes)):
        candidates = np.where(taken, -1.0, ious[d])
        best = int(np.argmax(candidates)) if len(candidates) else -1
        if best >= 0 and candidates[best] >= iou_threshold:
            taken[best] = True
            outcomes.append("tp")
        elif ioas.shape[1] and ioas[d].max() >= iou_threshold:
            outcomes.append("ignored")
        else:
            outcomes.append("fp")
    return outcomes


def count_false_positives(gt_dict, detections, img_ids=None, score_threshold=0.5, iou_threshold=0.5):
    """Confident false positives (Fig. 4 left): detections with score >= score_threshold that match
    no ground-truth object at IoU >= iou_threshold.

    Matching, per image and per category (a detection can only match a box of its own category):
      1. keep the detections with score >= score_threshold on the evaluated images; sort them by
         descending score (ties keep their input order);
      2. in that order, each detection takes the not-yet-taken non-crowd ground-truth box of its
         category with the highest IoU; if that IoU >= iou_threshold it is a true positive and the
         box is used up (one detection per box, one box per detection);
      3. otherwise, if it lies inside a crowd region (iscrowd=1) of its category, i.e. intersection
         over the *detection's* area >= iou_threshold as COCO scores crowds, it is ignored (neither
         true nor false positive; a crowd region can absorb any number of detections);
      4. otherwise it is a false positive: background, wrong class, IoU below the threshold, or a
         duplicate of an object already taken by a higher-scoring detection.
    All object sizes count and there is no per-image cap (COCO's maxDets=100 is not applied).
    Matching only the confident detections gives the same outcomes for them as matching all
    detections, since matching is greedy by score.

    gt_dict: the COCO annotation dict; detections: COCO results ({image_id, category_id, bbox, score});
    img_ids: the evaluated images (default: every image of gt_dict), also the per-image denominator.
    """
    images = _evaluated_images(gt_dict, img_ids)
    _, outcomes = confident_outcomes(gt_dict, detections, images, score_threshold, iou_threshold)
    counts = {"tp": 0, "fp": 0, "ignored": 0}
    for outcome in outcomes:
        counts[outcome] += 1
    num_images = len(images)
    return {"score_threshold": score_threshold, "iou_threshold": iou_threshold, "images": num_images,
            "detections": sum(counts.values()), "true_positives": counts["tp"],
            "false_positives": counts["fp"], "ignored_crowd": counts["ignored"],
            "per_image": counts["fp"] / num_images if num_images else 0.0}


def _evaluated_images(gt_dict, img_ids) -> set:
    return set(int(i) for i in (img_ids if img_ids is not None else [im["id"] for im in gt_dict["images"]]))


def confident_outcomes(gt_dict, detections, images, score_threshold=0.5, iou_threshold=0.5) -> tuple:
    """(scores [N], outcomes [N] 'tp' | 'fp' | 'ignored') of the detections with score >= score_threshold on
    the images `images` (a set of ids), matched as count_false_positives describes."""
    gts, crowds, dets = defaultdict(list), defaultdict(list), defaultdict(list)
    for ann in gt_dict["annotations"]:
        if ann["image_id"] in images:
            (crowds if ann.get("iscrowd", 0) else gts)[(ann["image_id"], ann["category_id"])].append(ann["bbox"])
    for det in detections:
        if det["image_id"] in images and det["score"] >= score_threshold:
            dets[(det["image_id"], det["category_id"])].append(det)
    scores, outcomes = [], []
    for key, group in dets.items():
        group = sorted(group, key=lambda d: -d["score"])        # stable: ties keep input order
        outcomes += match_detections([d["bbox"] for d in group], gts[key], crowds[key], iou_threshold)
        scores += [d["score"] for d in group]
    return np.asarray(scores, dtype=np.float64), outcomes


FP_CURVE_THRESHOLDS = np.round(np.arange(0.05, 1.0, 0.05), 2)   # 0.05, 0.10, ..., 0.95


def false_positive_curve(gt_dict, detections, img_ids=None, thresholds=FP_CURVE_THRESHOLDS, iou_threshold=0.5):
    """Fig. 4 left at every score threshold t of `thresholds`: {thresholds, false_positives_per_image,
    true_positives_per_image}, each entry what count_false_positives(score_threshold=t) gives per image.

    One matching at the lowest threshold serves them all: matching is greedy by score, so a detection's
    outcome depends only on the detections scored above it, which every higher threshold keeps.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    images = _evaluated_images(gt_dict, img_ids)
    lowest = float(thresholds.min()) if thresholds.size else 0.0
    scores, outcomes = confident_outcomes(gt_dict, detections, images, lowest, iou_threshold)
    outcomes = np.asarray(outcomes, dtype=object)
    per_image = max(len(images), 1)
    fp = [int(np.sum((outcomes == "fp") & (scores >= t))) / per_image for t in thresholds]
    tp = [int(np.sum((outcomes == "tp") & (scores >= t))) / per_image for t in thresholds]
    return {"thresholds": thresholds.tolist(), "iou_threshold": iou_threshold, "images": len(images),
            "false_positives_per_image": fp, "true_positives_per_image": tp}


def gt_boxes_by_size(gt_dict, img_ids=None):
    """Number of non-crowd ground-truth boxes per COCO size range (by the annotation's 'area')."""
    images = None if img_ids is None else set(int(i) for i in img_ids)
    counts = dict.fromkeys(SIZE_NAMES, 0)
    for ann in gt_dict["annotations"]:
        if ann.get("iscrowd", 0) or (images is not None and ann["image_id"] not in images):
            continue
        area = ann.get("area", ann["bbox"][2] * ann["bbox"][3])
        for name, (lo, hi) in COCO_AREA_RANGES.items():
            counts[name] += lo <= area <= hi
    return counts


def mean_precision(cocoeval, iou=None, area="all", max_dets=100, category=None):
    """COCO AP from an accumulated COCOeval: mean precision over recall points and categories
    (and IoU thresholds when iou is None); -1.0 when no ground truth falls in the area range.
    category: one category id instead of all (its AP; -1.0 when it has no ground truth)."""
    p = cocoeval.params
    precision = cocoeval.eval["precision"]                 # [T IoUs, R recalls, K categories, A areas, M maxDets]
    a = list(p.areaRngLbl).index(area)
    m = list(p.maxDets).index(max_dets)
    values = precision[:, :, :, a, m]
    if category is not None:
        values = values[:, :, list(p.catIds).index(category)]
    if iou is not None:
        values = values[np.isclose(np.asarray(p.iouThrs), iou)]
    values = values[values > -1]
    return float(values.mean()) if values.size else -1.0


def ap_by_size(cocoeval, gt_dict, img_ids=None):
    """Fig. 4 right: {small|medium|large: {AP, AP50, AP75, gt_boxes}}.

    AP per size equals COCO's APs/APm/APl; -1.0 (COCO's convention) when the size range has
    no ground truth. cocoeval None (no detections): all APs 0.0.
    """
    boxes = gt_boxes_by_size(gt_dict, img_ids)
    out = {}
    for name in SIZE_NAMES:
        if cocoeval is None:
            aps = {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
        else:
            aps = {"AP": mean_precision(cocoeval, None, name), "AP50": mean_precision(cocoeval, 0.5, name),
                   "AP75": mean_precision(cocoeval, 0.75, name)}
        out[name] = {**aps, "gt_boxes": boxes[name]}
    return out


def format_false_positives(fp):
    return (f"false positives (score >= {fp['score_threshold']:g}, no same-class match at IoU >= "
            f"{fp['iou_threshold']:g}): {fp['false_positives']} in {fp['images']} images = "
            f"{fp['per_image']:.3f} per image  ({fp['detections']} confident detections, "
            f"{fp['true_positives']} true positives, {fp['ignored_crowd']} on crowd regions)")


def format_ap_by_size(sizes):
    return "AP by size: " + "  ".join(
        f"{name} {s['AP']:.4f} (AP50 {s['AP50']:.4f}, AP75 {s['AP75']:.4f}; {s['gt_boxes']} boxes)"
        for name, s in sizes.items())
