"""Scoring detections with a config's metric (`evaluator.metric`): COCO AP or VOC mAP, and AP per class.

score_detections is the one place detections in the COCO results format are scored: train.py's
evaluation after every epoch, eval.py after a model run and eval.py --detections on a saved file
all call it, so a saved file re-scored gives the numbers of the run that wrote it.

It always computes the 12 COCO numbers (coco_eval.py) and, for the metric asked for:
  * coco:  AP per class = the mean of COCOeval's precision array [IoU 0.50:0.95, recall 0:0.01:1]
           for the category, area "all", maxDets 100: the COCO AP restricted to one category (COCO's
           AP is the mean of these over the categories that have ground truth); -1.0 for a category
           without ground truth, as COCO reports an empty area range;
  * voc07 / voc: VOC2007 11-point / VOC2010+ all-point AP per class and their mean, mAP
           (voc_eval.py: difficult objects are iscrowd: 1 and ignored; IoU 0.5; no detection cap).
All values are fractions (0..1), like the COCO numbers.

precision_recall_curves gives the curves behind these numbers (eval.py --plots): per class and IoU
threshold, the interpolated precision at COCO's 101 recall levels; with the COCO metric they are
COCOeval's own precision array, with a VOC metric the same interpolation of the devkit's curves.
"""
from typing import NamedTuple

import numpy as np

from ..config import EVAL_METRICS
from .analysis import mean_precision
from .coco_eval import coco_bbox_eval, load_coco_gt
from .voc_eval import class_outcomes, precision_recall, voc_eval

METRIC_TITLES = {
    "coco": "COCO AP (IoU 0.50:0.95, area all, maxDets 100)",
    "voc07": "VOC07 mAP (11-point AP at IoU 0.5, difficult objects ignored)",
    "voc": "VOC mAP (VOC2010+ all-point AP at IoU 0.5, difficult objects ignored)",
}


class MetricResult(NamedTuple):
    metric: str        # coco | voc07 | voc
    value: float       # COCO AP or VOC mAP
    per_class: dict    # {class name: AP}, in category id order
    objects: dict      # {class name: ground-truth objects that count (COCO: non-crowd, VOC: non-difficult)}

    @property
    def key(self) -> str:
        return metric_key(self.metric)


def metric_key(metric: str) -> str:
    """The name of a metric's headline number in reports and logs: 'AP' (COCO) or e.g. 'voc07_mAP'."""
    if metric not in EVAL_METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {EVAL_METRICS}")
    return "AP" if metric == "coco" else f"{metric}_mAP"


def class_names(categories: list) -> dict:
    """{category id: name} for a COCO 'categories' list; a missing name is the id, a repeated one
    gets its id appended, so that every class has its own entry in a per-class table."""
    names = {c["id"]: str(c.get("name", c["id"])) for c in categories}
    repeated = {n for n in names.values() if list(names.values()).count(n) > 1}
    return {i: f"{n} (id {i})" if n in repeated else n for i, n in sorted(names.items())}


def object_counts(gt: dict, img_ids=None) -> dict:
    """{category id: non-crowd (COCO) / non-difficult (VOC) ground-truth boxes on the evaluated images}."""
    images = None if img_ids is None else {int(i) for i in img_ids}
    counts = dict.fromkeys(sorted(c["id"] for c in gt["categories"]), 0)
    for a in gt["annotations"]:
        if not a.get("iscrowd", 0) and (images is None or a["image_id"] in images):
            counts[a["category_id"]] += 1
    return counts


def coco_per_class_ap(cocoeval, gt: dict, img_ids=None) -> dict:
    """{category id: COCO AP of the category} (module docstring); no detections (cocoeval None): 0.0
    for a category with ground truth, -1.0 without."""
    counts = object_counts(gt, img_ids)
    if cocoeval is None:
        return {c: 0.0 if n else -1.0 for c, n in counts.items()}
    return {c: mean_precision(cocoeval, category=c) for c in counts}


def score_detections(gt: dict, detections: list, metric: str = "coco", img_ids=None, backend: str = "faster",
                     verbose: bool = True) -> tuple:
    """(COCO stats dict, COCOeval or None, MetricResult) of `detections` against the annotation dict `gt`,
    over the images img_ids (default: all). verbose prints the COCO table."""
    key = metric_key(metric)   # an unknown metric fails before any work
    stats, cocoeval = coco_bbox_eval(load_coco_gt(gt, backend), detections, img_ids, backend, verbose=verbose)
    names = class_names(gt["categories"])
    if metric == "coco":
        value, ap, objects = stats[key], coco_per_class_ap(cocoeval, gt, img_ids), object_counts(gt, img_ids)
    else:
        voc = voc_eval(gt, detections, metric, img_ids)
        value, ap, objects = voc.mAP, voc.ap, voc.objects
    result = MetricResult(metric, value, {names[c]: v for c, v in ap.items()},
                          {names[c]: n for c, n in objects.items()})
    return stats, cocoeval, result


def format_per_class(result: MetricResult) -> str:
    """The headline number and a table of AP per class (4 decimals)."""
    title = METRIC_TITLES[result.metric]
    lines = [f"{title}: {result.value:.4f}" + ("" if result.metric == "coco" else
                                               f", the mean over {len(result.per_class)} classes"),
             f"  {'class':<20} {'AP':>7}  objects"]
    for name, ap in result.per_class.items():
        shown = f"{ap:7.4f}" if ap >= 0 else "    n/a"
        lines.append(f"  {name:<20} {shown}  {result.objects[name]}")
    return "\n".join(lines)


RECALL_LEVELS = np.linspace(0.0, 1.0, 101)   # COCO's recall levels (COCOeval params.recThrs)


class PRCurves(NamedTuple):
    """Precision at each recall level r of `recall` (the largest precision at recall >= r, 0 when r is
    never reached): by_iou[IoU threshold][class name] -> [R] for the classes with ground truth."""
    recall: np.ndarray
    by_iou: dict
    metric: str

    def mean(self, iou: float) -> np.ndarray:
        """The mean curve over the classes at `iou` [R]; its mean over recall levels is the AP at that IoU
        with COCO's interpolation (COCO: AP50 at 0.5, AP75 at 0.75)."""
        curves = list(self.by_iou[iou].values())
        return np.mean(curves, axis=0) if curves else np.zeros_like(self.recall)


def interpolated_precision(recall: np.ndarray, precision: np.ndarray, levels=RECALL_LEVELS) -> np.ndarray:
    """COCO's interpolation of a precision-recall curve (detections in score order): at each recall
    level, the largest precision at a recall >= it; 0 beyond the largest recall reached."""
    if not len(recall):
        return np.zeros(len(levels))
    envelope = np.maximum.accumulate(np.asarray(precision, dtype=np.float64)[::-1])[::-1]
    first = np.searchsorted(recall, levels, side="left")            # recall is non-decreasing
    return np.where(first < len(recall), envelope[np.minimum(first, len(recall) - 1)], 0.0)


def precision_recall_curves(gt: dict, detections: list, metric: str, cocoeval=None, img_ids=None,
                            ious=(0.5, 0.75)) -> PRCurves:
    """The precision-recall curves at the IoU thresholds `ious`, per class with ground truth (names as in
    MetricResult.per_class). coco: COCOeval's accumulated precision (area all, maxDets 100; cocoeval None,
    i.e. no detections: zeros); voc07 / voc: the devkit's matching (voc_eval.py; difficult objects ignored,
    no detection cap) at each IoU, interpolated as COCO does."""
    metric_key(metric)
    names = class_names(gt["categories"])
    by_iou = {}
    if metric == "coco":
        counts = object_counts(gt, img_ids)
        for iou in ious:
            by_iou[iou] = {names[c]: (coco_class_curve(cocoeval, c, iou) if cocoeval is not None
                                      else np.zeros(len(RECALL_LEVELS))) for c, n in counts.items() if n}
        recall = np.asarray(cocoeval.params.recThrs) if cocoeval is not None else RECALL_LEVELS
        return PRCurves(recall, by_iou, metric)
    for iou in ious:
        outcomes = class_outcomes(gt, detections, img_ids, iou)
        by_iou[iou] = {names[c]: interpolated_precision(*precision_recall(tp, fp, n))
                       for c, (tp, fp, n) in outcomes.items() if n}
    return PRCurves(RECALL_LEVELS, by_iou, metric)


def coco_class_curve(cocoeval, category: int, iou: float) -> np.ndarray:
    """COCOeval's interpolated precision [R] of one category at one IoU threshold (area all, maxDets 100)."""
    p = cocoeval.params
    t = int(np.flatnonzero(np.isclose(np.asarray(p.iouThrs), iou))[0])
    precision = cocoeval.eval["precision"][t, :, list(p.catIds).index(category),
                                           list(p.areaRngLbl).index("all"), list(p.maxDets).index(100)]
    return np.clip(np.asarray(precision, dtype=np.float64), 0.0, None)
