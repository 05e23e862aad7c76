"""COCO evaluation: score detections in the COCO results format with faster-coco-eval (or pycocotools);
read a saved results file (eval.py --detections)."""
import contextlib
import io
import json
import math

from .. import distributed as du

COCO_STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
# (metric, IoU, area, maxDets) of each COCO_STAT_NAMES entry, for the printed table
_COCO_STAT_ROWS = [("AP", "0.50:0.95", "all", 100), ("AP", "0.50", "all", 100), ("AP", "0.75", "all", 100),
                   ("AP", "0.50:0.95", "small", 100), ("AP", "0.50:0.95", "medium", 100),
                   ("AP", "0.50:0.95", "large", 100), ("AR", "0.50:0.95", "all", 1), ("AR", "0.50:0.95", "all", 10),
                   ("AR", "0.50:0.95", "all", 100), ("AR", "0.50:0.95", "small", 100),
                   ("AR", "0.50:0.95", "medium", 100), ("AR", "0.50:0.95", "large", 100)]


def load_coco_gt(dataset_dict, backend="faster"):
    """A COCO ground-truth object of the chosen backend from an annotation dict."""
    if backend == "faster":
        from faster_coco_eval import COCO
    elif backend == "pycocotools":
        from pycocotools.coco import COCO
    else:
        raise ValueError(f"unknown COCO backend {backend!r}; use 'faster' or 'pycocotools'")
    gt = COCO()
    gt.dataset = dataset_dict
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def coco_bbox_eval(coco_gt, detections, img_ids=None, backend="faster", verbose=True):
    """The 12 COCO bbox numbers as a dict (COCO_STAT_NAMES), plus the COCOeval object.

    img_ids restricts the evaluation (e.g. with --max-images); no detections -> all zeros.
    """
    if backend == "faster":
        from faster_coco_eval import COCOeval_faster as COCOeval
    else:
        from pycocotools.cocoeval import COCOeval
    if not detections:
        return {k: 0.0 for k in COCO_STAT_NAMES}, None
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        coco_dt = coco_gt.loadRes([dict(d) for d in detections])   # loadRes adds keys to the dicts it gets
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        if img_ids is not None:
            ev.params.imgIds = sorted(img_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = {k: float(v) for k, v in zip(COCO_STAT_NAMES, ev.stats[:12])}
    if verbose and du.is_main():   # faster-coco-eval logs its summary instead of printing it: print ours for both
        print(format_coco_table(stats))
    return stats, ev


def format_coco_table(stats):
    """The 12 COCO bbox numbers as the familiar 12-line table (the same for both backends)."""
    lines = []
    for name, (metric, iou, area, max_dets) in zip(COCO_STAT_NAMES, _COCO_STAT_ROWS):
        kind = "Average Precision  (AP)" if metric == "AP" else "Average Recall     (AR)"
        lines.append(f" {kind} @[ IoU={iou:<9} | area={area:>6} | maxDets={max_dets:>3d} ] = {stats[name]:.3f}")
    return "\n".join(lines)


def _finite(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def read_coco_results(path: str, gt: dict, ann_file: str = "the annotation file") -> list:
    """A detections file in the COCO results format ([{image_id, category_id, bbox [x, y, w, h], score}],
    what eval.py --save-detections writes), checked against the annotation dict `gt` (read from
    ann_file): every detection on one of its images and categories. Errors name the file and entry."""
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"detections file not found: {path}") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"detections file {path} is a directory") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a valid JSON file ({e})") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of detections in the COCO results format ({{image_id, "
                         f"category_id, bbox [x, y, w, h], score}}, as eval.py --save-detections writes), "
                         f"got a {type(data).__name__}")
    images = {im["id"] for im in gt["images"]}
    categories = {c["id"] for c in gt["categories"]}
    for i, det in enumerate(data):
        problem = None
        if not isinstance(det, dict) or not {"image_id", "category_id", "bbox", "score"} <= set(det):
            problem = "needs image_id, category_id, bbox and score"
        elif not (isinstance(det["bbox"], list) and len(det["bbox"]) == 4 and all(map(_finite, det["bbox"]))):
            problem = f"has bbox {det['bbox']!r}; expected 4 finite numbers [x, y, width, height]"
        elif not _finite(det["score"]):
            problem = f"has score {det['score']!r}; expected a finite number"
        elif det["image_id"] not in images:
            problem = f"has image_id {det['image_id']!r}, which is not an image of {ann_file}"
        elif det["category_id"] not in categories:
            problem = f"has category_id {det['category_id']!r}, which is not a category of {ann_file}"
        if problem:
            raise ValueError(f"{path}: detection #{i} {problem}")
    return data
