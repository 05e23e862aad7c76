"""COCO evaluation: run the model over a loader, gather detections from all ranks, score them
with faster-coco-eval (or pycocotools)."""
import contextlib
import io
import time

import torch
from tqdm import tqdm

from . import distributed as du

COCO_STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


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
    boxes = result["boxes"].cpu()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    labels = result["labels"].cpu().tolist()
    scores = result["scores"].cpu().tolist()
    return [{"image_id": image_id,
             "category_id": int(label2category[l] if label2category is not None else l),
             "bbox": [round(v, 3) for v in box], "score": round(s, 5)}
            for l, box, s in zip(labels, xywh, scores)]


def gather_detections(detections):
    """Every rank's detections, concatenated (the same list on every rank)."""
    return [d for part in du.all_gather_objects(detections) for d in part]


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
        coco_dt = coco_gt.loadRes(detections)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        if img_ids is not None:
            ev.params.imgIds = sorted(img_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    if verbose and du.is_main():
        print("\n".join(line for line in out.getvalue().splitlines() if "Average" in line))
    return {k: float(v) for k, v in zip(COCO_STAT_NAMES, ev.stats[:12])}, ev
