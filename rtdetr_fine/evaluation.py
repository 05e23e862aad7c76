"""COCO evaluation: run the model over a loader, gather detections from all ranks, score them
with faster-coco-eval (or pycocotools)."""
import contextlib
import io
import time

import torch
from tqdm import tqdm

from . import distributed as du

COCO_STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
# (metric, IoU, area, maxDets) of each COCO_STAT_NAMES entry, for the printed table
_COCO_STAT_ROWS = [("AP", "0.50:0.95", "all", 100), ("AP", "0.50", "all", 100), ("AP", "0.75", "all", 100),
                   ("AP", "0.50:0.95", "small", 100), ("AP", "0.50:0.95", "medium", 100),
                   ("AP", "0.50:0.95", "large", 100), ("AR", "0.50:0.95", "all", 1), ("AR", "0.50:0.95", "all", 10),
                   ("AR", "0.50:0.95", "all", 100), ("AR", "0.50:0.95", "small", 100),
                   ("AR", "0.50:0.95", "medium", 100), ("AR", "0.50:0.95", "large", 100)]


@torch.no_grad()
def predict(model, postprocessor, loader, device, label2category, amp_dtype=None, max_images=None,
            progress=True):
    """Detections of this rank's images in the COCO results format
    ({image_id, category_id, bbox [x, y, w, h], score}), plus the number of images seen.

    label2category maps contiguous labels to the annotation file's category ids; it is not
    applied when the postprocessor already remaps to COCO ids.
    """
    model.eval()
    detections, seen, start = [], 0, time.time()
    total = len(loader.dataset) if max_images is None else min(max_images, len(loader.dataset))
    bar = tqdm(total=total, desc="eval", unit="img", disable=not (progress and du.is_main()), dynamic_ncols=True)
    for images, targets in loader:
        if max_images is not None and seen >= max_images:
            break
        images = images.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs = model(images)
        outputs = {k: v.float() for k, v in outputs.items()}
        sizes = torch.stack([t["orig_size"] for t in targets]).to(device)
        for target, result in zip(targets, postprocessor(outputs, sizes)):
            detections.extend(to_coco_results(int(target["image_id"]), result,
                                              None if postprocessor.remap_mscoco_category else label2category))
        seen += len(targets)
        bar.update(len(targets) * du.world_size())
        bar.set_postfix(img_per_s=f"{seen * du.world_size() / max(time.time() - start, 1e-9):.1f}")
    bar.close()
    return detections, seen


def to_coco_results(image_id, result, label2category=None):
    """One image's postprocessed result -> COCO results entries (xywh boxes), unrounded as the
    official evaluation passes them to COCOeval.

    Labels without a category in the annotation file (num_classes larger than the file's
    category list) cannot be scored by COCO and are left out.
    """
    boxes = result["boxes"].cpu()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    labels = result["labels"].cpu().tolist()
    scores = result["scores"].cpu().tolist()
    return [{"image_id": image_id,
             "category_id": int(label2category[l] if label2category is not None else l),
             "bbox": box, "score": s}
            for l, box, s in zip(labels, xywh, scores)
            if label2category is None or l in label2category]


def gather_detections(detections):
    """Every rank's detections, concatenated (the same list on every rank).

    DistributedSampler pads the last round by repeating images when the set does not divide
    evenly over the ranks; such an image's detections are kept once, from the first rank
    that reports it (RT-DETR returns num_top_queries detections for every image).
    """
    merged, owner = [], {}
    for rank, part in enumerate(du.all_gather_objects(detections)):
        for det in part:
            if owner.setdefault(det["image_id"], rank) == rank:
                merged.append(det)
    return merged


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
