"""Self-describing checkpoints (issue 24): the config a train.py checkpoint records runs it without -c
(eval.py, predict.py, export_onnx.py, tools/visualize_fine.py, train.py -r); a -c config that builds another
model is refused, naming the keys; a checkpoint without a config asks for -c; a resumed run stays in its folder."""
import copy
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import rtdetr_fine
from helpers import ROOT, config_path, read_log, run_script, tiny_demo_args
from rtdetr_fine.checkpoint import (ConfigMismatchError, checkpoint_config, config_differences, config_for_checkpoint,
                                    model_keys)
from rtdetr_fine.config import ConfigError, DEFAULTS, config_from_dict, load_config
from rtdetr_fine.engine.run_dir import resume_folder

DEMO = config_path("demo/rtdetr_r18_fine_shapes.yml")
FILE_CLASSES = {3: "square", 17: "triangle", 90: "circle"}


def keys(differences):
    return [key for key, _, _ in differences]


# ---------------------------------------------------------------- the recorded config and its differences

def test_a_recorded_config_reads_back_as_the_loaded_one():
    cfg = load_config(DEMO, ["num_classes=3", "decoder.num_queries=30", "postprocessor.num_top_queries=30"])
    assert config_from_dict(cfg, "checkpoint x.pth") == cfg
    assert config_from_dict(cfg, "x", ["epochs=2"])["epochs"] == 2
    older = {k: v for k, v in cfg.items() if k != "anydepth"}            # a key added since: its default
    assert config_from_dict(older, "x")["anydepth"] == DEFAULTS["anydepth"]
    with pytest.raises(ConfigError, match="checkpoint old.pth: unknown config key 'no_such_key'"):
        config_from_dict({**cfg, "no_such_key": 1}, "checkpoint old.pth")
    with pytest.raises(ConfigError, match="checkpoint old.pth: backbone.depth must be one of"):
        config_from_dict({**cfg, "backbone": {**cfg["backbone"], "depth": 19}}, "checkpoint old.pth")


def test_differences_name_the_keys_that_build_another_model():
    r18, r50 = (load_config(config_path(n), ["backbone.pretrained=null"]) for n in ("rtdetr_r18.yml", "rtdetr_r50.yml"))
    assert config_differences(r18, r18) == []
    found = dict((k, (a, b)) for k, a, b in config_differences(r18, r50))
    assert found["backbone.depth"] == (18, 50) and found["decoder.num_decoder_layers"] == (3, 6)
    assert found["encoder.in_channels"] == ([128, 256, 512], [512, 1024, 2048])
    fine = load_config(config_path("rtdetr_r18_fine.yml"), ["backbone.pretrained=null"])
    assert keys(config_differences(r18, fine)) == ["encoder.alignment", "fine.enabled"]  # fine.* beyond: only with FINE on
    assert keys(config_differences(fine, load_config(config_path("rtdetr_r18_fine.yml"), ["fine.upsample=nearest"]))) \
        == ["fine.upsample"]                                                 # same tensors, another function
    # what only training, the data or the post-processing use is free; num_classes: auto takes any count
    free = ["decoder.dropout=0.1", "decoder.num_denoising=20", "optimizer.lr=0.1", "epochs=3", "output_dir=elsewhere",
            "postprocessor.num_top_queries=100", "val_dataloader.image_size=320", "num_classes=auto"]
    assert config_differences(r18, load_config(config_path("rtdetr_r18.yml"), free)) == []
    assert keys(config_differences(r18, load_config(config_path("rtdetr_r18.yml"), ["num_classes=3"]))) == ["num_classes"]
    ssd = load_config(config_path("ssd300.yml"), ["backbone.pretrained=null"])   # no RT-DETR sections in SSD300
    other = copy.deepcopy(ssd)   # (load_config refuses RT-DETR-only keys on SSD300: tests/test_config_limits.py)
    other["decoder"]["num_decoder_layers"] = 2
    assert keys(config_differences(ssd, other)) == []
    assert keys(config_differences(ssd, load_config(config_path("ssd300_cfsam.yml"), []))) == ["cross_layer"]
    assert "backbone.pretrained" not in model_keys() and "decoder.eval_idx" in model_keys()


def test_a_checkpoint_without_a_config_asks_for_one(tmp_path):
    cfg = load_config(DEMO, ["num_classes=3", "decoder.num_queries=30", "postprocessor.num_top_queries=30"])
    bare = tmp_path / "bare.pth"
    torch.save({"model": rtdetr_fine.build_model(cfg).state_dict()}, bare)
    for call in (lambda: checkpoint_config(str(bare)), lambda: config_for_checkpoint(None, str(bare))):
        with pytest.raises(ConfigError, match=f"checkpoint {bare} records no config .* -c CONFIG"):
            call()
    assert config_for_checkpoint(DEMO, str(bare), ["num_classes=3"])[1] == DEMO   # nothing to compare: -c is used
    with pytest.raises(ConfigError, match="give -c CONFIG, or -r CKPT"):
        config_for_checkpoint(None, None)


def test_a_config_that_builds_another_model_names_the_keys(custom_run):
    ckpt = str(custom_run["ckpt"])
    cfg, source = config_for_checkpoint(None, ckpt, ["epochs=5"])
    assert source == f"recorded in {ckpt}" and cfg["epochs"] == 5 and cfg["num_classes"] == 3
    same, source = config_for_checkpoint(custom_run["config"], ckpt, custom_run["overrides"])
    assert source == custom_run["config"]
    with pytest.raises(ConfigMismatchError) as e:
        config_for_checkpoint(config_path("rtdetr_r18.yml"), ckpt, ["backbone.pretrained=null"])
    message = str(e.value)
    assert "fine.enabled: True in the checkpoint's config, False in" in message
    assert "num_classes: 3 in the checkpoint's config, 80 in" in message
    assert "decoder.num_queries: 30" in message and "leave out -c" in message
    # an override applies to both sides, so it never counts as a difference
    with pytest.raises(ConfigMismatchError, match="fine.enabled") as e:
        config_for_checkpoint(config_path("rtdetr_r18.yml"), ckpt, ["decoder.num_queries=30", "num_classes=3",
                                                                    "postprocessor.num_top_queries=30"])
    assert "num_classes" not in str(e.value) and "num_queries" not in str(e.value)


# ---------------------------------------------------------------- the acceptance: no -c, no config.yml

def run_cli(script, argv, cwd):
    """python SCRIPT ARGV as a new process in `cwd` (another folder than the repository) -> CompletedProcess."""
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, argv)], capture_output=True,
                          text=True, cwd=cwd, timeout=900)


def test_eval_predict_export_run_from_the_checkpoint_alone(custom_run, tmp_path):
    """train.py with -u num_classes=auto ..., then eval.py / predict.py / export_onnx.py -r last.pth with no -c,
    no -u and no config.yml beside the checkpoint, each started from another folder."""
    run = tmp_path / "run"
    run.mkdir()
    ckpt = run / "last.pth"
    shutil.copy(custom_run["ckpt"], ckpt)
    assert sorted(os.listdir(run)) == ["last.pth"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    proc = run_cli("eval.py", ["-r", ckpt, "--device", "cpu", "--output-json", tmp_path / "report.json",
                               "--save-detections", tmp_path / "dets.json"], elsewhere)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"config      recorded in {ckpt}" in proc.stdout
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["images"] == 4 and report["config"] is None and list(report["per_class"]) == \
        ["square", "triangle", "circle"]
    assert {d["category_id"] for d in json.loads((tmp_path / "dets.json").read_text())} <= set(FILE_CLASSES)
    # the same numbers as with the training config and overrides given again
    with_c = tmp_path / "with_c.json"
    assert run_script("eval.py", ["-c", custom_run["config"], "-r", ckpt, "--device", "cpu", "--output-json", with_c,
                                  "-u", *custom_run["overrides"]]) == 0
    again = json.loads(with_c.read_text())
    assert {k: again[k] for k in ("AP", "AP50", "AR100", "per_class")} == \
        {k: report[k] for k in ("AP", "AP50", "AR100", "per_class")}

    images = custom_run["paths"]["val_img_folder"]
    proc = run_cli("predict.py", ["-r", ckpt, images, "-o", tmp_path / "pred", "--device", "cpu",
                                  "--score-threshold", "0"], elsewhere)
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = json.loads((tmp_path / "pred" / "images.json").read_text())
    assert len(written["images"]) == 4
    assert {c["id"]: c["name"] for c in written["categories"]} == FILE_CLASSES
    assert len(json.loads((tmp_path / "pred" / "detections.json").read_text())) == 4 * 30

    proc = run_cli("export_onnx.py", ["-r", ckpt, "-o", tmp_path / "m.onnx", "--check"], elsewhere)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"config: recorded in {ckpt}" in proc.stdout and "onnx.checker: ok" in proc.stdout
    assert "100.0% of the top-" in proc.stdout
    import onnx
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [1, 3, 96, 96]   # the run's size
    assert sorted(os.listdir(run)) == ["last.pth"]           # nothing written beside the checkpoint


def test_without_c_a_checkpoint_without_config_is_one_clear_error(tmp_path, custom_run, capsys):
    bare = tmp_path / "weights.pth"
    ckpt = torch.load(custom_run["ckpt"], map_location="cpu", weights_only=True)
    torch.save({"model": ckpt["model"]}, bare)
    image = os.path.join(custom_run["paths"]["val_img_folder"], sorted(os.listdir(custom_run["paths"]["val_img_folder"]))[0])
    for script, argv in (("eval.py", ["-r", bare, "--device", "cpu"]),
                         ("predict.py", ["-r", bare, image, "-o", tmp_path / "p", "--device", "cpu"]),
                         ("export_onnx.py", ["-r", bare, "-o", tmp_path / "m.onnx"]),
                         ("train.py", ["-r", bare, "--device", "cpu"]),
                         ("tools/visualize_fine.py", ["-r", bare, image, "-o", tmp_path / "v.png"])):
        capsys.readouterr()
        assert run_script(script, list(map(str, argv))) == 1, script
        err = capsys.readouterr().err
        assert f"checkpoint {bare} records no config" in err and "-c CONFIG" in err, (script, err)
        assert "Traceback" not in err
    assert not (tmp_path / "p").exists() and not (tmp_path / "m.onnx").exists()


def test_with_c_another_model_is_refused_before_any_work(custom_run, tmp_path, capsys):
    ckpt = str(custom_run["ckpt"])
    image = os.path.join(custom_run["paths"]["val_img_folder"], sorted(os.listdir(custom_run["paths"]["val_img_folder"]))[0])
    wrong = ["-c", config_path("rtdetr_r18.yml")]
    val_data = [o for o in custom_run["overrides"] if o.startswith("val_dataloader.dataset.")]   # found: no COCO
    for script, argv in (("eval.py", [*wrong, "-r", ckpt, "--device", "cpu", "-u", *val_data]),
                         ("predict.py", [*wrong, "-r", ckpt, image, "-o", str(tmp_path / "p"), "--device", "cpu"]),
                         ("export_onnx.py", [*wrong, "-r", ckpt, "-o", str(tmp_path / "m.onnx")]),
                         ("tools/visualize_fine.py", [*wrong, "-r", ckpt, image, "-o", str(tmp_path / "v.png")])):
        capsys.readouterr()
        assert run_script(script, argv) == 1, script
        err = capsys.readouterr().err
        assert "fine.enabled: True in the checkpoint's config, False in" in err, (script, err)
        assert "num_classes: 3 in the checkpoint's config, 80 in" in err and "leave out -c" in err
    assert not (tmp_path / "p").exists() and not (tmp_path / "m.onnx").exists() and not (tmp_path / "v.png").exists()


def test_visualize_fine_takes_the_checkpoints_config(custom_run, tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import visualize_fine
    image = os.path.join(custom_run["paths"]["val_img_folder"], sorted(os.listdir(custom_run["paths"]["val_img_folder"]))[0])
    maps = visualize_fine.run(visualize_fine.parse_args([image, "-r", str(custom_run["ckpt"]), "-o",
                                                         str(tmp_path / "maps.png")]), log=lambda *a: None)
    assert [tuple(m["P"].shape) for m in maps] == [(256, 6, 6), (256, 12, 12)] and (tmp_path / "maps.png").exists()


# ---------------------------------------------------------------- resume: in the checkpoint's folder

def test_resume_folder_rule():
    assert resume_folder("runs/a/last.pth", [], "output/x")[0] == "runs/a"
    assert "output_dir output/x is not used" in resume_folder("runs/a/last.pth", [], "output/x")[1]
    assert resume_folder("runs/a/last.pth", ["epochs=3", "output_dir=runs/b"], "runs/b") == \
        ("runs/b", "given with -u; the run of runs/a/last.pth (in runs/a) goes on there")
    assert resume_folder("last.pth", [], "output/x")[0] == "."
    assert resume_folder("runs/a/last.pth", [], "runs/a") == ("runs/a", "the folder of -r runs/a/last.pth, where its run is")


def test_resume_continues_in_the_checkpoints_folder_without_c(tmp_path, capsys, monkeypatch):
    """A run trained with -u output_dir=X and resumed as the README says (no output_dir) stays in X; with
    -u output_dir=Y it goes on in Y; -c is not needed."""
    monkeypatch.chdir(tmp_path)                     # the demo config's output_dir, output/demo_shapes, is here
    run = tmp_path / "run"
    assert run_script("train.py", tiny_demo_args(DEMO, tmp_path, run, "epochs=1")) == 0
    capsys.readouterr()
    # -c with the config (whose output_dir is not run/) and epochs raised, no -u output_dir
    argv = ["-c", DEMO, "-r", str(run / "last.pth"), "--device", "cpu", "-u",
            *[a for a in tiny_demo_args(DEMO, tmp_path, run)[5:] if not a.startswith("output_dir=")], "epochs=2"]
    assert run_script("train.py", argv) == 0
    out = capsys.readouterr().out
    assert f"output_dir {run}: the folder of -r {run / 'last.pth'}, where its run is; the config's output_dir " \
           "output/demo_shapes is not used" in out
    assert [r["epoch"] for r in read_log(run)] == [0, 1] and not (tmp_path / "output").exists()
    recorded = torch.load(run / "last.pth", map_location="cpu", weights_only=True)["config"]
    assert recorded["output_dir"] == str(run) and recorded["epochs"] == 2

    # no -c at all: the recorded config (epochs 2) with an override
    assert run_script("train.py", ["-r", str(run / "last.pth"), "--device", "cpu", "-u", "epochs=3"]) == 0
    out = capsys.readouterr().out
    assert f"config: recorded in {run / 'last.pth'}" in out
    assert [r["epoch"] for r in read_log(run)] == [0, 1, 2]

    # -u output_dir=Y: explicitly elsewhere
    other = tmp_path / "other"
    assert run_script("train.py", ["-r", str(run / "last.pth"), "--device", "cpu", "-u", "epochs=4",
                                   f"output_dir={other}"]) == 0
    assert f"output_dir {other}: given with -u" in capsys.readouterr().out
    assert [r["epoch"] for r in read_log(other)] == [3] and len(read_log(run)) == 3


def test_train_needs_c_unless_it_resumes(capsys):
    assert run_script("train.py", ["--device", "cpu"]) == 1
    assert "give the config with -c CONFIG" in capsys.readouterr().err
