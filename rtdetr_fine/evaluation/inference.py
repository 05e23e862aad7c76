"""Run a detector over a loader and collect its detections in the COCO results format, gathered from
all ranks."""
import time

import torch
from tqdm import tqdm

from .. import distributed as du


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
        # a post-processor that maps labels itself (remap_mscoco_category) returns category ids already
        mapping = None if postprocessor.label_to_category is not None else label2category
        for target, result in zip(targets, postprocessor(outputs, sizes)):
            detections.extend(to_coco_results(int(target["image_id"]), result, mapping))
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
