"""Evaluation: running a detector over a loader (inference.py), COCO AP (coco_eval.py), the VOC
devkit's AP (voc_eval.py), the config's metric with AP per class (metric.py), the FINE paper's
Fig. 4 analyses (analysis.py), FLOP counting (flops.py) and the authors' reference curves
(reference.py)."""
from .coco_eval import COCO_STAT_NAMES, coco_bbox_eval, format_coco_table, load_coco_gt
from .inference import gather_detections, predict, to_coco_results

__all__ = ["COCO_STAT_NAMES", "coco_bbox_eval", "format_coco_table", "gather_detections", "load_coco_gt", "predict",
           "to_coco_results"]
