"""The VOC metric (rtdetr_fine/evaluation/voc_eval.py): hand-made cases and a literal port of the devkit's
VOCevaldet.m / VOCap.m, which works on VOC's 1-based inclusive pixel boxes, one detection at a time."""
import numpy as np
import pytest

from rtdetr_fine.evaluation.voc_eval import average_precision, voc_eval


# ------------------------------------------------------------------ the devkit, literally (the reference)

def devkit_ap(gt, detections, category, metric):
    """VOCevaldet.m for one class on the devkit's own terms: boxes as inclusive pixel corners
    [x1, y1, x2, y2] (COCO [x, y, w, h] -> [x + 1, y + 1, x + w, y + h], the inverse of
    tools/voc_to_coco.py), areas and overlaps with +1, a loop over the detections in score order
    (MATLAB's stable sort), then VOCap (voc) or the 11-point loop of the VOC2007 code (voc07) with
    the recall levels of its Python port, np.arange(0, 1.1, 0.1)."""
    def corners(b):
        return [b[0] + 1, b[1] + 1, b[0] + b[2], b[1] + b[3]]

    boxes = {}
    for a in gt["annotations"]:
        if a["category_id"] == category:
            boxes.setdefault(a["image_id"], []).append((corners(a["bbox"]), bool(a["iscrowd"])))
    npos = sum(not diff for image in boxes.values() for _, diff in image)
    detected = {image: [False] * len(b) for image, b in boxes.items()}
    dets = sorted((d for d in detections if d["category_id"] == category), key=lambda d: -d["score"])
    tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
    for k, det in enumerate(dets):
        bb = corners(det["bbox"])
        ovmax, jmax = -np.inf, None
        for j, (bbgt, _) in enumerate(boxes.get(det["image_id"], [])):
            iw = min(bb[2], bbgt[2]) - max(bb[0], bbgt[0]) + 1
            ih = min(bb[3], bbgt[3]) - max(bb[1], bbgt[1]) + 1
            if iw > 0 and ih > 0:
                ua = ((bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1) + (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1)
                      - iw * ih)
                if iw * ih / ua > ovmax:
                    ovmax, jmax = iw * ih / ua, j
        if ovmax >= 0.5:
            if boxes[det["image_id"]][jmax][1]:
                pass                                         # difficult: neither TP nor FP
            elif not detected[det["image_id"]][jmax]:
                tp[k], detected[det["image_id"]][jmax] = 1, True
            else:
                fp[k] = 1                                    # multiple detection
        else:
            fp[k] = 1
    if npos == 0:
        return 0.0
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec = tp / npos
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    if metric == "voc07":
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            ap += (prec[rec >= t].max() if (rec >= t).any() else 0.0) / 11
        return ap
    mrec, mpre = np.concatenate([[0.0], rec, [1.0]]), np.concatenate([[0.0], prec, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def random_case(seed, num_images=12, num_classes=4):
    """VOC-like ground truth (integer pixel corners, some difficult) and detections: noisy copies of the
    boxes (some twice: duplicates), copies in the wrong class, and background boxes."""
    rng = np.random.default_rng(seed)
    images = [{"id": i + 1, "file_name": f"{i}.jpg", "width": 200, "height": 150} for i in range(num_images)]
    annotations, detections = [], []
    for image in images:
        for _ in range(rng.integers(0, 5)):
            x1, y1 = rng.integers(1, 150), rng.integers(1, 100)
            x2, y2 = x1 + rng.integers(5, 50), y1 + rng.integers(5, 50)
            box = [float(x1 - 1), float(y1 - 1), float(x2 - x1 + 1), float(y2 - y1 + 1)]   # voc_to_coco's conversion
            category = int(rng.integers(1, num_classes + 1))
            annotations.append({"id": len(annotations) + 1, "image_id": image["id"], "category_id": category,
                                "bbox": box, "area": box[2] * box[3], "iscrowd": int(rng.random() < 0.2)})
            for _ in range(rng.choice([0, 1, 1, 2])):
                noisy = (np.array(box) + rng.normal(0, 4, 4)).tolist()
                noisy[2:] = [max(v, 1.0) for v in noisy[2:]]
                detections.append({"image_id": image["id"], "category_id": category, "bbox": noisy,
                                   "score": float(rng.random())})
            if rng.random() < 0.3:
                detections.append({"image_id": image["id"], "category_id": int(rng.integers(1, num_classes + 1)),
                                   "bbox": box, "score": float(rng.random())})
        for _ in range(rng.integers(0, 3)):
            detections.append({"image_id": image["id"], "category_id": int(rng.integers(1, num_classes + 1)),
                               "bbox": rng.uniform(0, 120, 4).tolist(), "score": float(rng.random())})
    categories = [{"id": c, "name": f"class{c}"} for c in range(1, num_classes + 1)]
    return {"images": images, "annotations": annotations, "categories": categories}, detections


@pytest.mark.parametrize("metric", ["voc07", "voc"])
@pytest.mark.parametrize("seed", range(6))
def test_equals_the_devkit_on_random_sets(seed, metric):
    gt, detections = random_case(seed)
    result = voc_eval(gt, detections, metric)
    expected = {c["id"]: devkit_ap(gt, detections, c["id"], metric) for c in gt["categories"]}
    assert result.ap == pytest.approx(expected, abs=1e-12)
    assert result.mAP == pytest.approx(np.mean(list(expected.values())), abs=1e-12)
    assert 0 < result.mAP < 1                               # not a degenerate comparison
    assert result.objects == {c: sum(a["category_id"] == c and not a["iscrowd"] for a in gt["annotations"])
                              for c in expected}


# ------------------------------------------------------------------ hand-made cases

def one_class_set(num_objects, difficult=()):
    """num_objects objects of category 1, each alone in its image at [10, 10, 40, 40]; the indices in
    `difficult` are difficult (iscrowd 1). Category 2 has no objects."""
    images = [{"id": i + 1, "file_name": f"{i}.jpg", "width": 100, "height": 100} for i in range(num_objects)]
    annotations = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [10.0, 10.0, 40.0, 40.0],
                    "area": 1600.0, "iscrowd": int(i in difficult)} for i in range(num_objects)]
    return {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "bird"}, {"id": 2, "name": "cow"}]}


def det(image_id, score, bbox=(10.0, 10.0, 40.0, 40.0), category=1):
    return {"image_id": image_id, "category_id": category, "bbox": list(bbox), "score": score}


MISS = (60.0, 60.0, 30.0, 30.0)   # overlaps nothing: a false positive


def test_known_precision_recall_curve_11_point_and_all_point():
    """4 objects; in score order TP, FP, TP, FP, TP: recall .25 .25 .5 .5 .75, precision 1 .5 .667 .5 .6.
    11-point: t = 0, .1, .2 -> 1; t = .3, .4, .5 -> 2/3; t = .6, .7 -> .6; t = .8, .9, 1 -> 0 => 6.2 / 11.
    All-point: recall steps of .25 under the envelope 1, 2/3, .6, 0 => 17/30."""
    gt = one_class_set(4)
    detections = [det(1, 0.9), det(1, 0.8, MISS), det(2, 0.7), det(2, 0.6, MISS), det(3, 0.5)]
    assert voc_eval(gt, detections, "voc07").ap[1] == pytest.approx(6.2 / 11, abs=1e-12)
    assert voc_eval(gt, detections, "voc").ap[1] == pytest.approx(17 / 30, abs=1e-12)


def test_average_precision_of_a_perfect_and_an_empty_ranking():
    assert average_precision(np.ones(3), np.zeros(3), 3, "voc07") == pytest.approx(1.0)
    assert average_precision(np.ones(3), np.zeros(3), 3, "voc") == pytest.approx(1.0)
    assert average_precision(np.ones(3), np.zeros(3), 6, "voc07") == pytest.approx(6 / 11)   # recall .5: t <= .5
    assert average_precision(np.zeros(0), np.zeros(0), 3, "voc") == 0.0
    with pytest.raises(ValueError, match="unknown VOC metric"):
        average_precision(np.ones(1), np.zeros(1), 1, "coco")


@pytest.mark.parametrize("metric", ["voc07", "voc"])
def test_a_duplicate_detection_is_a_false_positive(metric):
    """The second detection of an object (even with IoU 1) is FP, unlike a detection of a second object."""
    gt = one_class_set(2)
    once = voc_eval(gt, [det(1, 0.9), det(2, 0.8)], metric).ap[1]
    duplicate = voc_eval(gt, [det(1, 0.9), det(1, 0.85), det(2, 0.8)], metric).ap[1]
    assert once == pytest.approx(1.0)
    # recall .5 at precision 1, then FP (precision .5), then recall 1 at precision 2/3
    assert duplicate == pytest.approx({"voc07": (6 * 1 + 5 * 2 / 3) / 11, "voc": 0.5 + 0.5 * 2 / 3}[metric])


@pytest.mark.parametrize("metric", ["voc07", "voc"])
def test_a_detection_on_a_difficult_object_changes_nothing(metric):
    """Object 3 is difficult: it is not counted in the recall, and a detection on it (at any score) is
    neither TP nor FP, so the AP is the same with or without it; a detection that misses it is FP."""
    gt = one_class_set(3, difficult={2})
    base = [det(1, 0.9), det(2, 0.5, MISS), det(2, 0.4)]
    without = voc_eval(gt, base, metric)
    for score in (0.95, 0.45, 0.1):
        assert voc_eval(gt, base + [det(3, score)], metric).ap == without.ap
    assert without.objects[1] == 2 and 0 < without.ap[1] < 1
    missed = voc_eval(gt, base + [det(3, 0.95, MISS)], metric).ap[1]
    assert missed < without.ap[1]


def test_the_best_overlap_decides_even_when_it_is_difficult_or_taken():
    """VOCevaldet.m matches each detection to the box it overlaps most, difficult and already detected
    boxes included (COCO would take the next free box): a detection overlapping a detected box most
    is FP even though it overlaps another free box by >= 0.5."""
    gt = {"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 40.0, 40.0], "iscrowd": 0},
                          {"id": 2, "image_id": 1, "category_id": 1, "bbox": [8.0, 0.0, 40.0, 40.0], "iscrowd": 0}],
          "categories": [{"id": 1, "name": "bus"}]}
    detections = [det(1, 0.9, (0.0, 0.0, 40.0, 40.0)), det(1, 0.8, (2.0, 0.0, 40.0, 40.0))]
    # the second overlaps box 1 (IoU 38/42) more than box 2 (IoU 34/46 >= 0.5): a duplicate of box 1
    result = voc_eval(gt, detections, "voc")
    assert result.ap[1] == pytest.approx(0.5) == devkit_ap(gt, detections, 1, "voc")


@pytest.mark.parametrize("metric", ["voc07", "voc"])
def test_classes_without_detections_or_ground_truth_have_ap_0_and_count_in_the_mean(metric):
    gt = one_class_set(2)
    result = voc_eval(gt, [det(1, 0.9), det(2, 0.8), det(1, 0.7, category=2)], metric)
    assert result.ap == {1: pytest.approx(1.0), 2: 0.0}            # cow: no object, one detection
    assert result.objects == {1: 2, 2: 0}
    assert result.mAP == pytest.approx(0.5)
    no_detections = voc_eval(gt, [], metric)
    assert no_detections.ap == {1: 0.0, 2: 0.0} and no_detections.mAP == 0.0


def test_a_recall_of_exactly_3_of_10_does_not_reach_the_level_0_3():
    """The 11 recall levels are 0.1 * k in floating point (the devkit's Python port): 0.1 * 3 > 0.3, so
    3 of 10 objects found does not count for t = 0.3 (nor, alike, 6/10 for 0.6 and 7/10 for 0.7)."""
    gt = one_class_set(10)
    detections = [det(i, 1.0 - i / 100) for i in (1, 2, 3)]
    ap = voc_eval(gt, detections, "voc07").ap[1]
    assert ap == pytest.approx(3 / 11) == devkit_ap(gt, detections, 1, "voc07")    # t = 0, .1, .2 only


def test_only_the_evaluated_images_count():
    gt = one_class_set(4)
    detections = [det(1, 0.9), det(2, 0.8), det(3, 0.7, MISS), det(4, 0.6, MISS)]
    assert voc_eval(gt, detections, "voc", img_ids=[1, 2]).ap[1] == pytest.approx(1.0)
    assert voc_eval(gt, detections, "voc", img_ids=[1, 2]).objects[1] == 2
    assert voc_eval(gt, detections, "voc").ap[1] == pytest.approx(0.5)
