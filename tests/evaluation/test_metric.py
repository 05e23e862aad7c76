"""rtdetr_fine/evaluation/metric.py: the config's metric (COCO AP or VOC mAP) and AP per class."""
import numpy as np
import pytest
from test_voc_eval import random_case

from rtdetr_fine.evaluation.metric import class_names, format_per_class, metric_key, score_detections
from rtdetr_fine.evaluation.voc_eval import voc_eval


def gt_as_detections(gt):
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt["annotations"] if not a["iscrowd"]]


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_coco_ap_per_class_averages_to_coco_ap(backend):
    gt, detections = random_case(3)
    gt["categories"].append({"id": 9, "name": "unseen"})            # no ground truth: -1, left out of the mean
    stats, _, result = score_detections(gt, detections, "coco", backend=backend, verbose=False)
    assert result.metric == "coco" and result.key == "AP" and result.value == stats["AP"]
    assert list(result.per_class) == ["class1", "class2", "class3", "class4", "unseen"]
    assert result.per_class["unseen"] == -1.0 and result.objects["unseen"] == 0
    seen = [ap for ap in result.per_class.values() if ap >= 0]
    assert len(set(seen)) == 4 and 0 < stats["AP"] < 1
    assert np.mean(seen) == pytest.approx(stats["AP"], abs=1e-12)
    assert result.objects["class1"] == sum(a["category_id"] == 1 and not a["iscrowd"] for a in gt["annotations"])


@pytest.mark.parametrize("metric", ["coco", "voc07", "voc"])
def test_ground_truth_as_detections_scores_1_for_every_class_with_objects(metric):
    """Seed 4 has a class (class1) whose only object is difficult: COCO leaves it out (-1), the VOC
    devkit gives it AP 0 and averages it in."""
    gt, _ = random_case(4)
    stats, _, result = score_detections(gt, gt_as_detections(gt), metric, verbose=False)
    assert result.objects["class1"] == 0 and all(n > 0 for c, n in result.objects.items() if c != "class1")
    assert stats["AP"] == pytest.approx(1.0)
    assert {c: ap for c, ap in result.per_class.items() if c != "class1"} == \
        {"class2": pytest.approx(1.0), "class3": pytest.approx(1.0), "class4": pytest.approx(1.0)}
    assert result.per_class["class1"] == (-1.0 if metric == "coco" else 0.0)
    assert result.value == pytest.approx(1.0 if metric == "coco" else 0.75)


@pytest.mark.parametrize("metric", ["voc07", "voc"])
def test_voc_metrics_report_the_devkit_numbers_by_class_name(metric):
    gt, detections = random_case(5)
    stats, cocoeval, result = score_detections(gt, detections, metric, img_ids=[1, 2, 3, 4, 5, 6], verbose=False)
    expected = voc_eval(gt, detections, metric, img_ids=[1, 2, 3, 4, 5, 6])
    assert result.key == f"{metric}_mAP" and result.value == expected.mAP
    assert result.per_class == {f"class{c}": ap for c, ap in expected.ap.items()}
    assert cocoeval is not None and set(stats) >= {"AP", "AP50"}    # the COCO numbers come along


def test_no_detections():
    gt, _ = random_case(3)
    gt["categories"].append({"id": 9, "name": "unseen"})
    _, _, coco = score_detections(gt, [], "coco", verbose=False)
    assert coco.value == 0.0 and coco.per_class["unseen"] == -1.0 and coco.per_class["class1"] == 0.0
    _, _, voc = score_detections(gt, [], "voc07", verbose=False)
    assert voc.value == 0.0 and set(voc.per_class.values()) == {0.0}


def test_class_names_are_unique_and_metric_names_are_checked():
    assert class_names([{"id": 2, "name": "cat"}, {"id": 1, "name": "cat"}, {"id": 5}]) == \
        {1: "cat (id 1)", 2: "cat (id 2)", 5: "5"}
    assert [metric_key(m) for m in ("coco", "voc07", "voc")] == ["AP", "voc07_mAP", "voc_mAP"]
    with pytest.raises(ValueError, match="unknown metric 'voc12'"):
        score_detections(random_case(0)[0], [], "voc12")


def test_the_printed_table_names_every_class():
    gt, detections = random_case(3)
    gt["categories"].append({"id": 9, "name": "unseen"})
    _, _, result = score_detections(gt, detections, "voc07", verbose=False)
    text = format_per_class(result)
    assert text.splitlines()[0] == f"VOC07 mAP (11-point AP at IoU 0.5, difficult objects ignored): " \
                                   f"{result.value:.4f}, the mean over 5 classes"
    for name, ap in result.per_class.items():
        assert f"{name:<20} {ap:7.4f}  {result.objects[name]}" in text
    _, _, coco = score_detections(gt, detections, "coco", verbose=False)
    assert "unseen                   n/a  0" in format_per_class(coco)
