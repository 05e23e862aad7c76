"""eval.py --plots: the curves behind the pictures are the metric's own numbers (metric.precision_recall_curves,
analysis.false_positive_curve), and rtdetr_fine/evaluation/plots.py draws them into five PNGs."""
import numpy as np
import pytest
from PIL import Image
from test_voc_eval import random_case

from rtdetr_fine.evaluation.analysis import ap_by_size, count_false_positives, false_positive_curve
from rtdetr_fine.evaluation.metric import (RECALL_LEVELS, coco_per_class_ap, interpolated_precision,
                                           precision_recall_curves, score_detections)
from rtdetr_fine.evaluation.voc_eval import class_outcomes, precision_recall

pytest.importorskip("matplotlib")
from rtdetr_fine.evaluation import plots  # noqa: E402

COCO_IOUS = tuple(np.linspace(0.5, 0.95, 10).round(2))


def test_coco_curves_are_cocoevals_and_average_to_its_numbers():
    gt, detections = random_case(3, num_images=20)
    stats, cocoeval, result = score_detections(gt, detections, "coco", verbose=False)
    curves = precision_recall_curves(gt, detections, "coco", cocoeval, ious=COCO_IOUS)
    assert np.allclose(curves.recall, RECALL_LEVELS) and len(curves.recall) == 101
    assert np.mean(curves.mean(0.5)) == pytest.approx(stats["AP50"], abs=1e-12)
    assert np.mean(curves.mean(0.75)) == pytest.approx(stats["AP75"], abs=1e-12)
    # over the 10 IoU thresholds, a class's curves average to its AP (metric.coco_per_class_ap)
    per_class = coco_per_class_ap(cocoeval, gt)
    for category in gt["categories"]:
        name = category["name"]
        mean = np.mean([curves.by_iou[iou][name] for iou in COCO_IOUS])
        assert mean == pytest.approx(per_class[category["id"]], abs=1e-12) == pytest.approx(result.per_class[name])
        assert np.all(np.diff(curves.by_iou[0.5][name]) <= 1e-12)          # interpolated: non-increasing


def brute_force_interpolation(recall, precision, levels):
    return np.array([max([p for r, p in zip(recall, precision) if r >= t], default=0.0) for t in levels])


def test_interpolation_is_cocos():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 30))
        recall = np.sort(rng.choice(np.linspace(0, 0.9, 10), n))
        precision = rng.random(n)
        assert np.array_equal(interpolated_precision(recall, precision),
                              brute_force_interpolation(recall, precision, RECALL_LEVELS))
    assert not interpolated_precision(np.array([]), np.array([])).any()


@pytest.mark.parametrize("metric", ["voc07", "voc"])
def test_voc_curves_interpolate_the_devkits_curves(metric):
    gt, detections = random_case(5, num_images=20)
    _, cocoeval, result = score_detections(gt, detections, metric, verbose=False)
    curves = precision_recall_curves(gt, detections, metric, cocoeval)
    assert set(curves.by_iou) == {0.5, 0.75}
    for category, (tp, fp, objects) in class_outcomes(gt, detections).items():
        name = f"class{category}"
        if not objects:
            assert name not in curves.by_iou[0.5]                         # no recall without objects
            continue
        recall, precision = precision_recall(tp, fp, objects)
        assert np.array_equal(curves.by_iou[0.5][name], brute_force_interpolation(recall, precision, RECALL_LEVELS))
        if metric == "voc":   # the all-point AP is the area under the same envelope: close to its 101-point mean
            assert np.mean(curves.by_iou[0.5][name]) == pytest.approx(result.per_class[name], abs=0.02)
    strict = class_outcomes(gt, detections, iou_threshold=0.75)
    assert all(strict[c][0].sum() <= tp.sum() for c, (tp, _, _) in class_outcomes(gt, detections).items())


def test_the_false_positive_curve_is_the_count_at_every_threshold():
    gt, detections = random_case(7, num_images=25)
    gt["annotations"][0]["iscrowd"] = 1
    curve = false_positive_curve(gt, detections, img_ids=list(range(1, 21)))
    assert curve["images"] == 20 and curve["thresholds"][0] == 0.05 and curve["thresholds"][-1] == 0.95
    for t, fp, tp in zip(curve["thresholds"], curve["false_positives_per_image"], curve["true_positives_per_image"]):
        count = count_false_positives(gt, detections, img_ids=list(range(1, 21)), score_threshold=t)
        assert fp == count["per_image"] and tp == count["true_positives"] / 20
    assert curve["false_positives_per_image"][0] > curve["false_positives_per_image"][-1] >= 0


def test_worst_classes_skip_classes_without_objects():
    per_class = {"a": 0.5, "b": -1.0, "c": 0.1, "d": 0.1, "e": 0.0, "f": 0.9}
    objects = {"a": 3, "b": 0, "c": 2, "d": 1, "e": 0, "f": 4}
    assert plots.worst_classes(per_class, objects, 3) == ["c", "d", "a"]
    assert plots.worst_classes(per_class, objects, 10) == ["c", "d", "a", "f"]


def picture(path):
    with Image.open(path) as png:
        pixels = np.asarray(png.convert("RGB"))
    return pixels.shape, len(np.unique(pixels.reshape(-1, 3), axis=0))


@pytest.mark.parametrize("metric", ["coco", "voc07"])
def test_five_pictures_are_written(metric, tmp_path):
    gt, detections = random_case(3, num_images=20)
    for a in gt["annotations"]:
        a["iscrowd"] = 0
    stats, cocoeval, result = score_detections(gt, detections, metric, verbose=False)
    curves = precision_recall_curves(gt, detections, metric, cocoeval)
    written = plots.write_evaluation_plots(str(tmp_path / "plots"), curves, result, ap_by_size(cocoeval, gt),
                                           false_positive_curve(gt, detections),
                                           count_false_positives(gt, detections), worst=2)
    assert [p.rsplit("/", 1)[1] for p in written] == list(plots.FILES)
    for path in written:
        (height, width, _), colours = picture(path)
        assert height > 200 and width > 300 and colours > 50, path      # a drawing, not a blank canvas
    with plots.style() as plt:
        fig = plots.pr_curves_figure(plt, curves, "t")
        labels = [line.get_label() for line in fig.axes[0].lines]
        plt.close(fig)
    assert labels[0] == f"IoU 0.50: AP {np.mean(curves.mean(0.5)):.3f} (4 classes)"
    if metric == "coco":
        assert labels[1].startswith(f"IoU 0.75: AP {stats['AP75']:.3f}")
