"""eval.py: COCO numbers, the Fig. 4 analyses, checkpoint layouts and errors (CPU, tiny shapes set)."""
import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

import rtdetr_fine
from helpers import ROOT, config_path, run_script
from rtdetr_fine.evaluation.analysis import ap_by_size, count_false_positives
from rtdetr_fine.evaluation import COCO_STAT_NAMES, coco_bbox_eval, load_coco_gt

DEMO = config_path("demo/rtdetr_r18_fine_shapes.yml")
SMALL = ["decoder.num_queries=100", "postprocessor.num_top_queries=300",
         "train_dataloader.image_size=128", "val_dataloader.image_size=128", "train_dataloader.batch_size=4",
         "train_dataloader.num_workers=0", "val_dataloader.num_workers=0", "val_dataloader.batch_size=10"]


def demo_overrides(root, out_dir):
    """train.py's demo config shrunk: 8 train / 20 val images of 128 px, one epoch of 2 iterations."""
    return ["epochs=1", f"output_dir={out_dir}", f"demo.root={root}", "demo.num_train=8", "demo.num_val=20",
            "demo.image_size=128", *SMALL]


def explicit_data_overrides(root):
    """The same val set without the demo machinery (it would regenerate the set for another num_classes)."""
    return ["demo.enabled=false", f"val_dataloader.dataset.img_folder={root}/val",
            f"val_dataloader.dataset.ann_file={root}/annotations/instances_val.json", *SMALL]


def run_eval(argv, report_path):
    """python eval.py ARGV --output-json REPORT_PATH, in this process -> the report it wrote."""
    assert run_script("eval.py", argv + ["--device", "cpu", "--output-json", str(report_path)]) == 0
    return read_json(report_path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One train.py epoch on the tiny demo set -> {root, out_dir, overrides}.

    Training starts (-t) from weights whose encoder box head predicts boxes of 22-64 px instead of
    the 6-26 px anchors (objects are 12-56 px), so that even this barely trained model finds some
    objects (~10 of ~50 at IoU 0.5) and its AP50 / AR100 are not zero: the train-vs-eval
    comparison then compares real numbers.
    """
    tmp = tmp_path_factory.mktemp("eval")
    root, out_dir = tmp / "shapes", tmp / "run"
    overrides = demo_overrides(root, out_dir)
    cfg = rtdetr_fine.load_config(DEMO, overrides)
    torch.manual_seed(0)
    model = rtdetr_fine.build_model(cfg)
    with torch.no_grad():
        model.decoder.enc_bbox_head.layers[-1].bias[2:] = 1.4    # sigmoid-logit shift of w, h
    start = tmp / "start.pth"
    torch.save({"model": model.state_dict()}, start)
    with contextlib.redirect_stdout(io.StringIO()):
        assert run_script("train.py", ["-c", DEMO, "-t", str(start), "--device", "cpu", "-u", *overrides]) == 0
    return {"root": root, "out_dir": out_dir, "overrides": overrides, "tmp": tmp}


def read_json(path):
    with open(path) as f:
        return json.load(f)


def xyxy(boxes):
    """COCO xywh list -> float64 tensor [N, 4] xyxy."""
    b = torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    return torch.cat([b[:, :2], b[:, :2] + b[:, 2:]], dim=1)


def independent_fp_count(gt, detections, score_threshold=0.5, iou_threshold=0.5):
    """Confident detections with no same-class, still-unmatched, non-crowd box at IoU >= threshold,
    taking detections in descending score order (no crowd regions in the sets this is used on)."""
    assert not any(a.get("iscrowd", 0) for a in gt["annotations"])
    false_positives = 0
    for image in gt["images"]:
        image_boxes = [a for a in gt["annotations"] if a["image_id"] == image["id"]]
        image_dets = [d for d in detections if d["image_id"] == image["id"] and d["score"] >= score_threshold]
        for category in gt["categories"]:
            boxes = [a["bbox"] for a in image_boxes if a["category_id"] == category["id"]]
            dets = sorted((d for d in image_dets if d["category_id"] == category["id"]), key=lambda d: -d["score"])
            ious = box_iou(xyxy([d["bbox"] for d in dets]), xyxy(boxes))
            used = set()
            for i in range(len(dets)):
                free = [(ious[i, j].item(), j) for j in range(len(boxes)) if j not in used]
                best_iou, best = max(free, default=(0.0, None))
                if best is not None and best_iou >= iou_threshold:
                    used.add(best)
                else:
                    false_positives += 1
    return false_positives


def pycocotools_stats(ann_file, detections):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(ann_file)
        ev = COCOeval(gt, gt.loadRes(detections), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(COCO_STAT_NAMES, ev.stats[:12].tolist()))


def test_eval_reproduces_train_last_evaluation_and_pycocotools(trained, tmp_path):
    out_json, dets_json = tmp_path / "report.json", tmp_path / "dets.json"
    report = run_eval(["-c", DEMO, "-r", str(trained["out_dir"] / "last.pth"), "-u", *trained["overrides"],
                       "--save-detections", str(dets_json), "--fp-score", "0"], out_json)
    with open(trained["out_dir"] / "log.txt") as f:
        last = json.loads(f.read().splitlines()[-1])
    # train.py evaluates the EMA model each epoch; last.pth holds that EMA, which eval.py prefers
    assert last["evaluated"] == "ema" and report["weights"] == "ema"
    for name in COCO_STAT_NAMES:
        assert report[name] == pytest.approx(last[f"val_{name}"], abs=1e-12), name
    assert report["AR100"] > 0 and report["AP50"] > 0, "the comparison should not be 0 == 0"

    # the AP of eval.py's saved detections, computed directly with pycocotools
    detections = read_json(dets_json)
    ann_file = str(trained["root"] / "annotations" / "instances_val.json")
    assert len(detections) == 20 * 300
    assert all(sorted(d) == ["bbox", "category_id", "image_id", "score"] for d in detections)
    assert {d["category_id"] for d in detections} <= {c["id"] for c in read_json(ann_file)["categories"]}
    reference = pycocotools_stats(ann_file, detections)
    for name in COCO_STAT_NAMES:
        assert report[name] == pytest.approx(reference[name], abs=1e-12), name

    # Fig. 4: false positives recounted independently, AP by size consistent with COCO's APs/APm/APl
    gt = read_json(ann_file)
    fp = report["false_positives"]
    assert fp["score_threshold"] == 0 and fp["images"] == 20 and fp["detections"] == len(detections)
    assert fp["false_positives"] == independent_fp_count(gt, detections, 0.0)
    assert 0 < fp["true_positives"] and fp["per_image"] == fp["false_positives"] / 20
    scores = sorted(d["score"] for d in detections)
    for threshold in [scores[len(scores) // 2], scores[-len(scores) // 10], scores[-1], 0.5]:
        assert count_false_positives(gt, detections, score_threshold=threshold)["false_positives"] == \
            independent_fp_count(gt, detections, threshold)
    sizes = report["ap_by_size"]
    assert [sizes[s]["AP"] for s in ("small", "medium", "large")] == \
        pytest.approx([report["APs"], report["APm"], report["APl"]], abs=1e-12)
    assert sum(s["gt_boxes"] for s in sizes.values()) == len(gt["annotations"])
    assert report["params"] > 0 and report["gflops"] > 0 and report["images"] == 20


def test_checkpoint_layouts_load_through_eval(trained, tmp_path):
    ckpt = torch.load(trained["out_dir"] / "last.pth", map_location="cpu", weights_only=True)
    ema, raw = ckpt["ema"]["module"], ckpt["model"]
    layouts = {"ema": {"ema": {"module": ema, "updates": 2}, "model": raw}, "model": {"model": ema}, "state_dict": ema}
    reports = {}
    for expected, obj in layouts.items():
        path = tmp_path / f"{expected}.pth"
        torch.save(obj, path)
        backend = "pycocotools" if expected == "state_dict" else "faster"
        reports[expected] = run_eval(["-c", DEMO, "-r", str(path), "-u", *explicit_data_overrides(trained["root"]),
                                      "--max-images", "2", "--backend", backend], tmp_path / f"{expected}.json")
        assert reports[expected]["weights"] == expected
        assert reports[expected]["images"] == 2 and reports[expected]["false_positives"]["images"] == 2
    stats = [[r[k] for k in COCO_STAT_NAMES] for r in reports.values()]
    assert stats[0] == stats[1] == stats[2]          # the same weights in each layout (and both backends)


def test_gathered_detections_keep_padded_images_once(monkeypatch):
    """DistributedSampler repeats images to even out the ranks; their detections must count once."""
    from rtdetr_fine import distributed as du
    from rtdetr_fine.evaluation import gather_detections

    def det(image_id, score):
        return {"image_id": image_id, "category_id": 1, "bbox": [0, 0, 1, 1], "score": score}

    # 5 images on 2 ranks: rank 0 gets images 1, 3, 5; rank 1 gets 2, 4 and image 1 again as padding
    rank0 = [det(1, 0.9), det(1, 0.8), det(3, 0.7), det(5, 0.5)]
    rank1 = [det(2, 0.6), det(4, 0.4), det(1, 0.9), det(1, 0.8)]
    monkeypatch.setattr(du, "all_gather_objects", lambda obj: [rank0, rank1])
    assert gather_detections(rank0) == rank0 + rank1[:2]


def test_wrong_num_classes_is_one_clear_message(trained):
    cmd = [sys.executable, os.path.join(ROOT, "eval.py"), "-c", DEMO, "-r", str(trained["out_dir"] / "last.pth"),
           "--device", "cpu", "-u", *explicit_data_overrides(trained["root"]), "num_classes=4"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "num_classes" in proc.stderr
    assert "trained for 3 classes" in proc.stderr and "-u num_classes=3" in proc.stderr


def failure_stderr(capsys, argv):
    """python eval.py ARGV that must fail -> its whole stderr, which must not be a traceback."""
    capsys.readouterr()
    assert run_script("eval.py", argv + ["--device", "cpu"]) != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_missing_checkpoint_or_data_exits_with_a_message(trained, tmp_path, capsys):
    err = failure_stderr(capsys, ["-c", DEMO, "-r", str(tmp_path / "nope.pth"), "-u", *explicit_data_overrides(trained["root"])])
    assert "checkpoint not found" in err and "nope.pth" in err
    err = failure_stderr(capsys, ["-c", config_path("rtdetr_r18.yml"), "-r", str(tmp_path / "nope.pth"), "-u",
                                  "backbone.pretrained=null", f"val_dataloader.dataset.img_folder={tmp_path}/no_coco/val2017"])
    assert "dataset not found" in err and "no_coco" in err


def gt_as_detections(gt, score=1.0):
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": score}
            for a in gt["annotations"]]


@pytest.fixture(scope="module")
def shapes_gt(tmp_path_factory):
    from rtdetr_fine.data import make_shapes_dataset
    paths = make_shapes_dataset(tmp_path_factory.mktemp("gt"), num_train=1, num_val=20, image_size=160,
                                num_classes=3, seed=3)
    return read_json(paths["val_ann_file"])


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_ground_truth_as_detections_gives_ap_1(shapes_gt, backend):
    detections = gt_as_detections(shapes_gt)
    stats, cocoeval = coco_bbox_eval(load_coco_gt(shapes_gt, backend), detections, backend=backend, verbose=False)
    for name in ("AP", "AP50", "AP75", "AR100"):
        assert stats[name] == pytest.approx(1.0), name
    sizes = ap_by_size(cocoeval, shapes_gt)
    for name, size in sizes.items():
        assert size["AP"] == (pytest.approx(1.0) if size["gt_boxes"] else -1.0), name
    fp = count_false_positives(shapes_gt, detections)
    assert fp["false_positives"] == 0 and fp["true_positives"] == len(shapes_gt["annotations"])


def test_false_positive_count_on_perturbed_detections(shapes_gt):
    """Duplicates, wrong classes, shifted boxes, background boxes and scores at the threshold."""
    rng = np.random.default_rng(0)
    detections = []
    for a in shapes_gt["annotations"]:
        x, y, w, h = a["bbox"]
        other = a["category_id"] % 3 + 1
        shift = rng.uniform(0, 0.6) * w
        detections += [
            {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": [x, y, w, h],
             "score": float(rng.choice([0.3, 0.5, 0.9]))},
            {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": [x + shift, y, w, h],
             "score": float(rng.uniform(0.4, 1.0))},                                   # duplicate / shifted
            {"image_id": a["image_id"], "category_id": other, "bbox": [x, y, w, h],
             "score": float(rng.uniform(0.4, 1.0))},                                   # wrong class
        ]
    for image in shapes_gt["images"]:
        for _ in range(2):
            detections.append({"image_id": image["id"], "category_id": int(rng.integers(1, 4)),
                               "bbox": rng.uniform(0, 80, size=4).round(1).tolist(), "score": float(rng.uniform())})
    fp = count_false_positives(shapes_gt, detections)
    assert fp["false_positives"] == independent_fp_count(shapes_gt, detections)
    assert fp["false_positives"] > 0 and fp["true_positives"] > 0
    assert fp["per_image"] == fp["false_positives"] / len(shapes_gt["images"])
    # >= 0.5 includes 0.5 exactly
    at_half = [d for d in detections if d["score"] == 0.5]
    assert at_half and count_false_positives(shapes_gt, at_half)["detections"] == len(at_half)


def test_false_positive_rules_on_a_hand_made_image():
    """One object (category 1) and one crowd region (category 1) in a 100 x 100 image."""
    gt = {"images": [{"id": 1, "width": 100, "height": 100}],
          "categories": [{"id": 1}, {"id": 2}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0},
                          {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 50, 50], "area": 2500,
                           "iscrowd": 1}]}

    def det(box, score, category=1):
        return {"image_id": 1, "category_id": category, "bbox": box, "score": score}

    detections = [det([1, 1, 20, 20], 0.9),      # TP
                  det([0, 0, 20, 20], 0.8),      # duplicate of the taken object: FP (though IoU 1)
                  det([0, 0, 20, 20], 0.95, 2),  # wrong class: FP
                  det([0, 10, 20, 20], 0.7),     # IoU 1/3 with the (taken) object: FP
                  det([60, 60, 10, 10], 0.6),    # inside the crowd region: ignored
                  det([70, 70, 10, 10], 0.55),   # inside the crowd region again: ignored
                  det([40, 40, 20, 20], 0.6),    # a quarter inside the crowd region: FP
                  det([60, 60, 10, 10], 0.6, 2),  # crowd region of another class: FP
                  det([80, 0, 10, 10], 0.49)]    # below the score threshold: not counted
    fp = count_false_positives(gt, detections)
    assert (fp["true_positives"], fp["false_positives"], fp["ignored_crowd"], fp["detections"]) == (1, 5, 2, 8)
    assert fp["per_image"] == 5.0


def test_anydepth_reports_each_depth_and_full_equals_the_baseline(trained, tmp_path, capsys):
    """The trained demo weights in the any-depth model (skip twins from their main norms, as -t does):
    at full depth the same numbers as the baseline; one report per --depth."""
    from rtdetr_fine.checkpoint import load_weights
    last, overrides = str(trained["out_dir"] / "last.pth"), explicit_data_overrides(trained["root"])
    baseline = run_eval(["-c", DEMO, "-r", last, "-u", *overrides, "--max-images", "4"], tmp_path / "base.json")
    cfg = rtdetr_fine.load_config(DEMO, [*overrides, "anydepth.enabled=true"])
    model = rtdetr_fine.build_model(cfg)
    load_weights(model, last, finetune=True, log=lambda _: None)
    path = tmp_path / "anydepth.pth"
    torch.save({"model": model.state_dict()}, path)
    anydepth = [*overrides, "anydepth.enabled=true"]
    report = run_eval(["-c", DEMO, "-r", str(path), "-u", *anydepth, "--max-images", "4",
                       "--depth", "full", "min", "neck=1", "full", "--save-detections", str(tmp_path / "dets.json")],
                      tmp_path / "anydepth.json")
    by_depth = report["by_depth"]
    assert list(by_depth) == ["full", "min", "b0000_n1_d3"]           # each depth once, in the order given
    full = by_depth["full"]
    assert [full[k] for k in COCO_STAT_NAMES] == [baseline[k] for k in COCO_STAT_NAMES]
    assert full["params"] == baseline["params"] and full["gflops"] == baseline["gflops"]
    assert full["params_total"] > full["params"]                       # + the unused skip twins
    assert by_depth["min"]["gflops"] < by_depth["b0000_n1_d3"]["gflops"] < full["gflops"]
    assert by_depth["min"]["params"] < by_depth["b0000_n1_d3"]["params"] < full["params"]
    assert {k: report[k] for k in COCO_STAT_NAMES} == {k: full[k] for k in COCO_STAT_NAMES}   # top level: first
    for tag in by_depth:
        assert len(read_json(tmp_path / f"dets_{tag}.json")) == by_depth[tag]["detections"]

    assert "backbone has 2 flags, but the backbone has 4 stages" in failure_stderr(
        capsys, ["-c", DEMO, "-r", str(path), "-u", *anydepth, "--depth", "backbone=1,0"])
    assert "--depth needs an any-depth config" in failure_stderr(
        capsys, ["-c", DEMO, "-r", last, "-u", *overrides, "--depth", "min"])

# ---------------------------------------------------------------- hostile inputs (issue 16)

def eval_error(argv, capsys):
    """python eval.py ARGV that must fail -> the last line of its stderr (after any progress bar)."""
    capsys.readouterr()
    assert run_script("eval.py", argv + ["--device", "cpu"]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return captured.err.splitlines()[-1], captured.out


def copy_val_set(trained, tmp_path, edit=None):
    """The trained fixture's val set copied to tmp_path, its annotation JSON passed through edit(data)
    (or replaced by the text edit returns) -> -u overrides pointing at the copy."""
    import shutil
    root = tmp_path / "set"
    shutil.copytree(trained["root"] / "val", root / "val")
    ann = root / "annotations" / "instances_val.json"
    ann.parent.mkdir()
    data = read_json(trained["root"] / "annotations" / "instances_val.json")
    result = edit(data) if edit else None
    ann.write_text(result if isinstance(result, str) else json.dumps(data))
    return explicit_data_overrides(root), root, data


def test_bad_output_paths_fail_before_the_evaluation(trained, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    base = ["-c", DEMO, "-r", str(trained["out_dir"] / "last.pth"), "-u", *explicit_data_overrides(trained["root"])]
    for flag, path, said in [("--output-json", tmp_path, "is a directory"),
                             ("--output-json", tmp_path / "a_file" / "r.json", "a_file is a file, not a folder"),
                             ("--save-detections", tmp_path / "a_file" / "d.json", "a_file is a file, not a folder")]:
        err, out = eval_error(base + ["--output-json", str(tmp_path / "ok.json")] * (flag != "--output-json")
                              + [flag, str(path)], capsys)
        assert flag in err and str(path) in err and said in err
        assert "AP" not in out and not (tmp_path / "ok.json").exists()     # stopped before any work
    err, _ = eval_error(base + ["--fp-score", "2"], capsys)
    assert "--fp-score must be in [0, 1], got 2.0" in err


def test_a_failed_detections_write_keeps_the_report(trained, tmp_path, capsys, monkeypatch):
    from rtdetr_fine import cli
    real_write, dets = cli.write_text_atomic, tmp_path / "dets.json"

    def disk_full_for_detections(path, text):
        if path == str(dets):
            raise OSError(28, "No space left on device")
        return real_write(path, text)
    monkeypatch.setattr(cli, "write_text_atomic", disk_full_for_detections)
    err, out = eval_error(["-c", DEMO, "-r", str(trained["out_dir"] / "last.pth"), "-u",
                           *explicit_data_overrides(trained["root"]), "--max-images", "1000",
                           "--output-json", str(tmp_path / "report.json"), "--save-detections", str(dets)], capsys)
    assert err == f"eval.py: error: could not write {dets}: No space left on device"
    assert read_json(tmp_path / "report.json")["images"] == 20 and not dets.exists()
    assert "--max-images 1000: the set has only 20, all used" in out


@pytest.mark.parametrize("case", ["truncated json", "unknown category", "no images"])
def test_bad_val_annotations_are_named(trained, tmp_path, capsys, case):
    def edit(data):
        if case == "truncated json":
            return json.dumps(data)[:100]
        if case == "unknown category":
            data["annotations"][0]["category_id"] = 42
        if case == "no images":
            data["images"], data["annotations"] = [], []
    overrides, root, data = copy_val_set(trained, tmp_path, edit)
    err, _ = eval_error(["-c", DEMO, "-r", str(trained["out_dir"] / "last.pth"), "-u", *overrides], capsys)
    assert str(root / "annotations" / "instances_val.json") in err
    expected = {"truncated json": "not a valid JSON file", "no images": "the val set has no images",
                "unknown category": f"annotation id {data['annotations'][0]['id'] if data['annotations'] else ''}"}
    assert expected[case] in err


def test_corrupt_val_image_in_a_worker_is_one_line_naming_it(trained, tmp_path, capsys):
    overrides, root, data = copy_val_set(trained, tmp_path)
    image = root / "val" / data["images"][0]["file_name"]
    image.write_bytes(image.read_bytes()[:60])
    err, _ = eval_error(["-c", DEMO, "-r", str(trained["out_dir"] / "last.pth"), "-u", *overrides,
                         "val_dataloader.num_workers=1"], capsys)
    assert err.startswith("eval.py: error: cannot decode image") and str(image) in err
    assert "DataLoader worker" not in err


def test_checkpoint_of_another_architecture_names_it_not_num_classes(trained, tmp_path, capsys):
    cfg = rtdetr_fine.load_config(config_path("rtdetr_r50.yml"), ["backbone.pretrained=null"])
    path = tmp_path / "r50.pth"
    torch.save({"model": rtdetr_fine.build_model(cfg).state_dict()}, path)
    capsys.readouterr()
    assert run_script("eval.py", ["-c", DEMO, "-r", str(path), "--device", "cpu", "-u",
                                  *explicit_data_overrides(trained["root"])]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "-u num_classes" not in err
    assert "looks like RT-DETR R50, without FINE, 6 decoder layers, hidden dim 256, 80 classes" in err
    assert "builds        RT-DETR R18, with FINE" in err


# ---------------------------------------------------------------- metrics, AP per class, --detections (issue 23)

SCORES = [*COCO_STAT_NAMES, "metric", "per_class", "objects_per_class", "detections", "false_positives", "ap_by_size"]


@pytest.mark.parametrize("metric, max_images", [("voc07", None), ("voc", 7), ("coco", None)])
def test_saved_detections_score_as_the_model_run_that_wrote_them(trained, tmp_path, metric, max_images):
    """eval.py --detections FILE (no model, no checkpoint) gives the report of the model run that saved FILE."""
    limit = ["--max-images", str(max_images)] if max_images else []
    dets = tmp_path / "dets.json"
    run = run_eval(["-c", DEMO, "-r", str(trained["out_dir"] / "last.pth"), "-u", *trained["overrides"],
                    "--save-detections", str(dets), "--metric", metric, *limit], tmp_path / "run.json")
    rescored = run_eval(["-c", DEMO, "--detections", str(dets), "-u", *trained["overrides"], "--metric", metric,
                         *limit], tmp_path / "rescored.json")
    assert {k: rescored[k] for k in SCORES} == {k: run[k] for k in SCORES}
    assert rescored["metric"] == metric and rescored["images"] == run["images"] == (max_images or 20)
    assert list(run["per_class"]) == ["circle", "square", "triangle"]       # the val file's category names
    assert rescored["detections_file"] == str(dets) and "weights" not in rescored
    if metric == "coco":
        assert "mAP" not in run
        assert np.mean([ap for ap in run["per_class"].values() if ap >= 0]) == pytest.approx(run["AP"], abs=1e-12)
    else:
        assert rescored["mAP"] == run["mAP"] == pytest.approx(np.mean(list(run["per_class"].values())))
        assert 0 < run["mAP"] < 1                               # the comparison is not 0 == 0


def test_the_default_metric_is_the_configs(trained, tmp_path, capsys):
    """evaluator.metric decides when --metric is not given; the per-class table is printed."""
    dets = tmp_path / "dets.json"
    run_eval(["-c", DEMO, "-r", str(trained["out_dir"] / "last.pth"), "-u", *trained["overrides"], "--max-images",
              "3", "--save-detections", str(dets)], tmp_path / "coco.json")
    assert read_json(tmp_path / "coco.json")["metric"] == "coco"
    capsys.readouterr()
    report = run_eval(["-c", DEMO, "--detections", str(dets), "-u", *trained["overrides"], "evaluator.metric=voc07",
                       "--max-images", "3"], tmp_path / "voc.json")
    out = capsys.readouterr().out
    assert report["metric"] == "voc07" and f"VOC07 mAP (11-point AP at IoU 0.5" in out
    for name, ap in report["per_class"].items():
        assert f"{name:<20} {ap:7.4f}" in out


def test_detections_arguments_and_files_are_checked(trained, tmp_path, capsys):
    last, overrides = str(trained["out_dir"] / "last.pth"), trained["overrides"]
    good = tmp_path / "dets.json"
    good.write_text("[]")
    assert "give either -r CKPT" in failure_stderr(capsys, ["-c", DEMO, "-u", *overrides])
    assert "not both" in failure_stderr(capsys, ["-c", DEMO, "-r", last, "--detections", str(good)])
    assert "--save-detections needs a model run" in failure_stderr(
        capsys, ["-c", DEMO, "--detections", str(good), "--save-detections", str(tmp_path / "x.json")])
    ann = trained["root"] / "annotations" / "instances_val.json"
    cases = {"missing": (None, "detections file not found"),
             "not json": ("[{", "not a valid JSON file"),
             "a mapping": ('{"image_id": 1}', "expected a list of detections"),
             "no score": ('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}]', "detection #0 needs"),
             "bad box": ('[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1], "score": 1}]', "has bbox [0, 0, 1]"),
             "other image": ('[{"image_id": 999, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}]',
                             f"image_id 999, which is not an image of {ann}")}
    for name, (text, said) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.json"
        if text is not None:
            path.write_text(text)
        err = failure_stderr(capsys, ["-c", DEMO, "--detections", str(path), "-u", *overrides])
        assert str(path) in err and said in err, name
    err = failure_stderr(capsys, ["-c", DEMO, "--detections", str(good), "-u", *explicit_data_overrides(trained["root"]),
                                  f"val_dataloader.dataset.ann_file={tmp_path}/none.json"])
    assert "val_dataloader.dataset.ann_file" in err and "none.json" in err
    empty = run_eval(["-c", DEMO, "--detections", str(good), "-u", *overrides, "--metric", "voc"],
                     tmp_path / "empty.json")
    assert empty["mAP"] == 0.0 and empty["AP"] == 0.0 and empty["detections"] == 0


@pytest.mark.parametrize("metric", ["coco", "voc07"])
def test_plots_draw_the_evaluation_of_the_run(trained, tmp_path, metric):
    """eval.py --plots DIR writes the five pictures (rtdetr_fine/evaluation/plots.py) of the model run, and the
    same five from a saved detections file; a DIR that cannot be a folder fails before the evaluation."""
    pytest.importorskip("matplotlib")
    from rtdetr_fine.evaluation.plots import FILES
    dets = tmp_path / "dets.json"
    run_eval(["-c", DEMO, "-r", str(trained["out_dir"] / "last.pth"), "-u", *trained["overrides"], "--metric", metric,
              "--save-detections", str(dets), "--plots", str(tmp_path / "run"), "--plot-classes", "2"],
             tmp_path / "run.json")
    run_eval(["-c", DEMO, "--detections", str(dets), "-u", *trained["overrides"], "--metric", metric,
              "--plots", str(tmp_path / "saved")], tmp_path / "saved.json")
    for folder in ("run", "saved"):
        assert sorted(os.listdir(tmp_path / folder)) == sorted(FILES)
        assert all(os.path.getsize(tmp_path / folder / name) > 5000 for name in FILES)


def test_plots_into_a_file_fails_before_the_evaluation(trained, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    err = failure_stderr(capsys, ["-c", DEMO, "-r", str(trained["out_dir"] / "last.pth"), "-u", *trained["overrides"],
                                  "--plots", str(blocker)])
    assert "--plots" in err and str(blocker) in err
    assert "--plot-classes must be at least 1" in failure_stderr(
        capsys, ["-c", DEMO, "-r", str(trained["out_dir"] / "last.pth"), "--plot-classes", "0"])
