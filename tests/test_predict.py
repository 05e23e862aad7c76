"""predict.py on a checkpoint trained here (category ids {3, 17, 90}, num_classes: auto): drawn images, COCO
results, the same detections as eval.py, ONNX twin of the PyTorch path, video, errors; and the class set
end to end (train -> eval -> predict)."""
import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from helpers import ROOT, run_script

from rtdetr_fine.predictor import label_font

FILE_CLASSES = {3: "square", 17: "triangle", 90: "circle"}


def run_predict(custom_run, inputs, out_dir, *extra, weights=None):
    """python predict.py INPUTS ... -> (detections, images) as it wrote them (detections.json, images.json)."""
    weights = weights or ["-r", str(custom_run["ckpt"])]
    argv = [*map(str, inputs), "-c", custom_run["config"], *weights, "-o", str(out_dir), "--device", "cpu",
            *extra, "-u", *custom_run["overrides"]]
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):  # progress bar
        assert run_script("predict.py", argv) == 0
    return read_json(os.path.join(out_dir, "detections.json")), read_json(os.path.join(out_dir, "images.json"))["images"]


def run_eval(custom_run, argv, report_path):
    with contextlib.redirect_stdout(io.StringIO()):
        assert run_script("eval.py", argv + ["--output-json", str(report_path)]) == 0
    return read_json(report_path)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def val_image(custom_run, index=0):
    """The val image with the index-th smallest image id (eval.py's order)."""
    images = sorted(read_json(custom_run["paths"]["val_ann_file"])["images"], key=lambda i: i["id"])
    return os.path.join(custom_run["paths"]["val_img_folder"], images[index]["file_name"])


def twins(reference, candidate, score_tol, box_tol):
    """Fraction of `candidate` detections with a twin in `reference`: same image, same category,
    score within score_tol, every box coordinate within box_tol pixels."""
    matched = 0
    for d in candidate:
        matched += any(r["image_id"] == d["image_id"] and r["category_id"] == d["category_id"]
                       and abs(r["score"] - d["score"]) <= score_tol
                       and np.abs(np.subtract(r["bbox"], d["bbox"])).max() <= box_tol for r in reference)
    return matched / max(len(candidate), 1)


def test_checkpoint_records_the_files_class_set(custom_run):
    ckpt = torch.load(custom_run["ckpt"], map_location="cpu", weights_only=True)
    assert ckpt["classes"] == {"num_classes": 3, "category_ids": [3, 17, 90], "names": ["square", "triangle", "circle"],
                               "remap_mscoco_category": False}
    assert ckpt["config"]["num_classes"] == 3                  # auto, resolved from the training file
    assert ckpt["model"]["decoder.enc_score_head.weight"].shape[0] == 3
    assert ckpt["iteration"] == 1                              # 8 images, batch 8: one step


def test_eval_reports_the_files_category_ids(custom_run, tmp_path):
    """eval.py maps labels with the checkpoint's class set, also when the val file lists fewer categories
    in another order (its own contiguous mapping would then give other ids)."""
    base = ["-c", custom_run["config"], "-r", str(custom_run["ckpt"]), "--device", "cpu", "--fp-score", "0"]
    report = run_eval(custom_run, base + ["--save-detections", str(tmp_path / "a.json"), "-u", *custom_run["overrides"]],
                      tmp_path / "a_report.json")
    full = read_json(tmp_path / "a.json")
    assert report["images"] == 4 and len(full) == 4 * 30
    assert {d["category_id"] for d in full} <= set(FILE_CLASSES)

    # the same val images with a file that lists only {90, 17} (and their annotations)
    data = read_json(custom_run["paths"]["val_ann_file"])
    data["categories"] = [c for c in data["categories"] if c["id"] != 3]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] != 3]
    subset = tmp_path / "subset.json"
    subset.write_text(json.dumps(data))
    run_eval(custom_run, base + ["--save-detections", str(tmp_path / "b.json"), "-u", *custom_run["overrides"],
                                 f"val_dataloader.dataset.ann_file={subset}"], tmp_path / "b_report.json")
    assert read_json(tmp_path / "b.json") == full


def test_predict_matches_eval_and_writes_loadable_coco_results(custom_run, tmp_path):
    """Threshold 0 keeps every detection: predict.py must give eval.py's detections for a val image
    (same resize and scaling, boxes in the original pixels, the file's ids), and a results file
    that pycocotools loads against images.json."""
    from pycocotools.coco import COCO
    run_eval(custom_run, ["-c", custom_run["config"], "-r", str(custom_run["ckpt"]), "--device", "cpu",
                          "--max-images", "1", "--save-detections", str(tmp_path / "eval.json"),
                          "-u", *custom_run["overrides"]], tmp_path / "eval_report.json")
    from_eval = read_json(tmp_path / "eval.json")
    path = val_image(custom_run)
    detections, images = run_predict(custom_run, [path], tmp_path / "out", "--score-threshold", "0")
    assert images == [{"id": 1, "file_name": os.path.basename(path), "width": 128, "height": 128}]
    assert len(detections) == len(from_eval) == 30
    for d in from_eval:
        d["image_id"] = 1
    assert twins(from_eval, detections, score_tol=1e-4, box_tol=1e-2) == 1.0
    assert max(max(d["bbox"][0] + d["bbox"][2], d["bbox"][1] + d["bbox"][3]) for d in detections) > 96  # 128-px scale

    assert read_json(tmp_path / "out" / "detections.json") == detections
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tmp_path / "out" / "images.json"))
        results = gt.loadRes(str(tmp_path / "out" / "detections.json"))
    assert len(results.getAnnIds()) == 30 and gt.getCatIds() == [3, 17, 90]
    assert {c["id"]: c["name"] for c in gt.loadCats(gt.getCatIds())} == FILE_CLASSES


def test_drawn_image_differs_where_boxes_are_and_shows_file_names(custom_run, tmp_path, monkeypatch):
    import torchvision.utils
    path = val_image(custom_run, 1)
    source = Image.open(path).convert("RGB")
    lossless = tmp_path / "input.png"                     # PNG in, PNG out: unchanged pixels stay equal
    source.save(lossless)
    everything, _ = run_predict(custom_run, [lossless], tmp_path / "all", "--score-threshold", "0")
    threshold = sorted(d["score"] for d in everything)[-3]  # keep the three best, whatever their scores

    drawn_text = []
    real_draw = torchvision.utils.draw_bounding_boxes
    monkeypatch.setattr(torchvision.utils, "draw_bounding_boxes",
                        lambda image, boxes, labels, **kw: drawn_text.extend(labels) or real_draw(image, boxes,
                                                                                                   labels, **kw))
    kept, _ = run_predict(custom_run, [lossless], tmp_path / "top", "--score-threshold", str(threshold))
    assert 3 <= len(kept) < len(everything)
    assert [t.rsplit(" ", 1)[0] for t in drawn_text] == [FILE_CLASSES[d["category_id"]] for d in kept]

    before = np.asarray(source).astype(int)
    after = np.asarray(Image.open(tmp_path / "top" / "input.png").convert("RGB")).astype(int)
    assert after.shape == before.shape
    changed = np.abs(after - before).sum(-1) > 0
    for box in (d["bbox"] for d in kept):
        assert outline_drawn(changed, box), box
    # away from every box and its label (drawn from the box's top-left corner on) nothing changed
    near = np.zeros_like(changed)
    for d, text in zip(kept, drawn_text):
        for x0, y0, x1, y1 in (xyxy(d["bbox"]), label_extent(d["bbox"], text, changed.shape)):
            near[max(int(y0) - 2, 0):int(y1) + 3, max(int(x0) - 2, 0):int(x1) + 3] = True
    assert changed.any() and not changed[~near].any()


def xyxy(box):
    x, y, w, h = box
    return x, y, x + w, y + h


def label_extent(box, text, shape):
    """xyxy of the label text torchvision draws for `box` (font as predict.py chooses it)."""
    from PIL import ImageDraw, ImageFont
    font_file, size = label_font(*shape)
    font = ImageFont.truetype(font_file, size) if font_file else ImageFont.load_default()
    margin = max(1, round(min(shape) / 250)) + 1                 # torchvision: box line width + 1
    x, y = int(box[0]), int(box[1])
    return ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((x + margin, y + margin), text, font=font)


def outline_drawn(changed, box, band=1):
    """Along each side of the xywh box (clipped to the image), >= 90% of the positions have a changed
    pixel within `band` px across the side (torchvision truncates coordinates to ints)."""
    height, width = changed.shape
    x, y, w, h = box
    x0, x1 = (int(np.clip(v, 0, width - 1)) for v in (x, x + w))
    y0, y1 = (int(np.clip(v, 0, height - 1)) for v in (y, y + h))
    sides = [changed[y0:y1 + 1, max(c - band, 0):c + band + 1].any(1) for c in (x0, x1)]
    sides += [changed[max(r - band, 0):r + band + 1, x0:x1 + 1].any(0) for r in (y0, y1)]
    return all(side.mean() >= 0.9 for side in sides)


def test_onnx_path_gives_the_pytorch_detections(custom_run, tmp_path):
    onnx_file = tmp_path / "model.onnx"
    export = subprocess.run([sys.executable, os.path.join(ROOT, "export_onnx.py"), "-c", custom_run["config"],
                             "-r", str(custom_run["ckpt"]), "-o", str(onnx_file), "--input-size", "96",
                             "-u", *custom_run["overrides"]], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert export.returncode == 0, export.stderr[-2000:]
    inputs = [val_image(custom_run, 0), val_image(custom_run, 2)]
    reference, _ = run_predict(custom_run, inputs, tmp_path / "torch", "--score-threshold", "0")
    onnx_dets, images = run_predict(custom_run, inputs, tmp_path / "onnx", "--score-threshold", "0",
                                    weights=["-r", str(custom_run["ckpt"]), "--onnx", str(onnx_file)])
    assert len(images) == 2 and len(onnx_dets) == len(reference) == 60
    # the 20 best of each image: near-tied scores may swap ranks or cross the top-30 boundary
    best = [d for i in (1, 2) for d in sorted((d for d in onnx_dets if d["image_id"] == i),
                                              key=lambda d: -d["score"])[:20]]
    assert twins(reference, best, score_tol=1e-3, box_tol=0.5) == 1.0
    assert read_json(tmp_path / "onnx" / "images.json")["categories"] == \
        [{"id": c, "name": n} for c, n in FILE_CLASSES.items()]


def write_video(path, frames, fps=5):
    import av
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def read_video(path):
    import av
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [f.to_ndarray(format="rgb24") for f in container.decode(stream)], float(stream.average_rate)


def test_video_round_trip(custom_run, tmp_path):
    image = np.asarray(Image.open(val_image(custom_run, 0)).convert("RGB"))
    frames = [np.ascontiguousarray(np.roll(image, 6 * i, axis=1)) for i in range(3)]
    write_video(tmp_path / "clip.mp4", frames)
    everything, _ = run_predict(custom_run, [tmp_path / "clip.mp4"], tmp_path / "all", "--score-threshold", "0")
    threshold = sorted(d["score"] for d in everything)[-4]
    detections, images = run_predict(custom_run, [tmp_path / "clip.mp4"], tmp_path / "out",
                                     "--score-threshold", str(threshold))
    assert [(i["id"], i["frame"], i["file_name"]) for i in images] == [(1, 0, "clip.mp4"), (2, 1, "clip.mp4"),
                                                                        (3, 2, "clip.mp4")]
    assert {d["image_id"] for d in everything} == {1, 2, 3} and len(detections) >= 4
    source, _ = read_video(tmp_path / "clip.mp4")
    written, fps = read_video(tmp_path / "out" / "clip.mp4")
    assert len(written) == 3 and written[0].shape == (128, 128, 3) and fps == 5
    # frames with a detection drawn differ from the decoded input by more than the codec's noise
    for index in {d["image_id"] - 1 for d in detections}:
        x, y, w, h = max((d for d in detections if d["image_id"] == index + 1), key=lambda d: d["score"])["bbox"]
        x0, y0 = int(np.clip(round(x), 0, 127)), int(np.clip(round(y), 0, 127))
        x1 = int(np.clip(round(x + w), 0, 127))
        edge = np.abs(written[index][y0, x0:x1 + 1].astype(int) - source[index][y0, x0:x1 + 1].astype(int))
        assert edge.sum(-1).mean() > 30, index


def test_missing_input_is_one_clear_message(custom_run, tmp_path):
    missing = str(tmp_path / "no_such.jpg")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "predict.py"), val_image(custom_run), missing,
                           "-c", custom_run["config"], "-r", str(custom_run["ckpt"]), "-o", str(tmp_path / "o"),
                           "-u", *custom_run["overrides"]], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert f"input not found: {missing}" in proc.stderr
    assert not (tmp_path / "o").exists()                   # checked before any work


def test_bad_weights_and_inputs_are_named(custom_run, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "broken.onnx").write_text("not a model")
    cases = [([str(tmp_path / "no_such_folder")], f"input not found: {tmp_path / 'no_such_folder'}"),
             ([str(tmp_path / "empty")], "no images or videos in folder"),
             ([str(tmp_path / "notes.txt")], "notes.txt: not an image or video"),
             ([val_image(custom_run), "--onnx", str(tmp_path / "broken.onnx")], "broken.onnx"),
             ([val_image(custom_run), "-r", str(tmp_path / "none.pth")], "-r file not found"),
             ([val_image(custom_run), "--score-threshold", "2"], "--score-threshold"),
             ([val_image(custom_run), "-o", str(tmp_path / "notes.txt")], f"-o {tmp_path / 'notes.txt'} is a file"),
             ([val_image(custom_run), "--device", "cuda:7"], "--device cuda:7")]
    for argv, message in cases:
        weights = [] if "-r" in argv or "--onnx" in argv else ["-r", str(custom_run["ckpt"])]
        capsys.readouterr()
        out = [] if "-o" in argv else ["-o", str(tmp_path / "o")]
        assert run_script("predict.py", [*argv, *weights, "-c", custom_run["config"], *out,
                                         "-u", *custom_run["overrides"]]) == 1, message
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (message, err)


def test_a_video_without_pyav_names_the_pip_install_before_any_work(tmp_path, capsys, monkeypatch):
    """Issue 25: without PyAV, predict.py said "No module named 'av'"; now it names the install (cli.require),
    before the checkpoint or the config is read (neither exists here)."""
    monkeypatch.setitem(sys.modules, "av", None)   # `import av` raises ImportError
    image = tmp_path / "a.jpg"
    Image.new("RGB", (8, 8)).save(image)
    for video in ("clip.mp4", "clip.avi"):
        (tmp_path / video).write_bytes(b"not decoded")
        argv = [str(image), str(tmp_path / video), "-c", str(tmp_path / "none.yml"), "-o", str(tmp_path / "o"),
                "--onnx", str(image)]
        assert run_script("predict.py", argv) == 1
        err = capsys.readouterr().err
        assert "reading and writing videos needs av, not installed here: pip install av" in err
    assert not (tmp_path / "o").exists()


def test_an_output_file_that_is_a_folder_is_named_before_drawing(tmp_path, capsys):
    """Issue 25: -o DIR with DIR/detections.json a folder fails before any image is drawn, naming it."""
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (40, 30)).save(tmp_path / "photos" / "a.jpg")
    (tmp_path / "ck.pth").write_bytes(b"PK\x03\x04 never read")
    out = tmp_path / "out"
    for blocked in ("detections.json", "images.json", "a.jpg"):
        (out / blocked).mkdir(parents=True)
        capsys.readouterr()
        assert run_script("predict.py", [str(tmp_path / "photos"), "-r", str(tmp_path / "ck.pth"), "-o", str(out)]) == 1
        err = capsys.readouterr().err
        assert err == (f"predict.py: error: output file {str(out / blocked)!r} is a directory; give a file name "
                       "inside it\n")
        assert sorted(os.listdir(out)) == [blocked] and not os.listdir(out / blocked)   # nothing drawn
        os.rmdir(out / blocked)
