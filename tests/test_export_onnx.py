"""export_onnx.py, the command line: checkpoint loading, --simplify/--check, errors without tracebacks."""
import os
import sys

import pytest
import torch
from helpers import ROOT, run_script

import rtdetr_fine

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

SIZE = 320
BASELINE = os.path.join(ROOT, "configs", "rtdetr_r18.yml")


def test_cli_loads_checkpoint_simplifies_and_checks(tmp_path, capsys):
    cfg = rtdetr_fine.load_config(BASELINE, ["backbone.pretrained=null"])
    torch.manual_seed(3)
    ckpt = tmp_path / "ckpt.pth"   # as training writes it: EMA weights, RepVGG branches unfused
    torch.save({"ema": {"module": rtdetr_fine.build_model(cfg).state_dict()}}, ckpt)
    out = tmp_path / "model.onnx"
    code = run_script("export_onnx.py", ["-c", BASELINE, "-r", str(ckpt), "-o", str(out),
                                         "--input-size", str(SIZE), "--batch-size", "2", "--simplify", "--check"])
    text = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert "loaded ema weights" in text
    assert "simplified with onnx" in text or "neither onnxslim nor onnxsim" in text
    assert "% of the top-100 detections agree" in text
    assert "ONNX op types" in text and "GridSample" in text
    graph = onnx.load(str(out)).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2


@pytest.mark.parametrize("argv, message", [
    (["-c", "configs/missing.yml"], "config file not found"),
    (["-c", BASELINE, "-r", "missing.pth"], "checkpoint not found"),
    (["-c", BASELINE, "-u", "fine.attention=softmax"], "fine.attention must be one of"),
    (["-c", BASELINE, "--input-size", "300"], "multiples of 32"),
    (["-c", BASELINE, "--input-size", "96"], "fewer than decoder.num_queries=300"),
])
def test_cli_errors_are_messages_not_tracebacks(tmp_path, capsys, argv, message):
    assert run_script("export_onnx.py", argv + ["-o", str(tmp_path / "x.onnx")]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_anydepth_exports_one_graph_per_depth_with_only_the_layers_it_runs(tmp_path, capsys):
    """Twins unlike their main norms (as after any-depth training), so the graph must hold the right ones."""
    config = os.path.join(ROOT, "configs", "rtdetr_r18_anydepth.yml")
    small = ["decoder.num_queries=100", "postprocessor.num_top_queries=100"]
    cfg = rtdetr_fine.load_config(config, ["backbone.pretrained=null", *small])
    torch.manual_seed(3)
    model = rtdetr_fine.build_model(cfg)
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith(".skip"):
                for p in module.parameters():
                    p.add_(0.2 * torch.randn_like(p))
    ckpt = tmp_path / "anydepth.pth"
    torch.save({"model": model.state_dict()}, ckpt)
    out = tmp_path / "r18.onnx"
    code = run_script("export_onnx.py", ["-c", config, "-r", str(ckpt), "-o", str(out), "-u", *small,
                                         "--input-size", "128", "--check", "--depth", "full", "min", "neck=1"])
    text = capsys.readouterr().out
    assert code == 0 and "depth min (backbone=1,1,1,1 neck=1 decoder=2)" in text
    assert text.count("onnxruntime vs PyTorch: 100.0% of the top-100 detections agree") == 3   # at each depth
    graphs = {tag: onnx.load(str(tmp_path / f"r18_{tag}.onnx")).graph for tag in ("full", "min", "b0000_n1_d3")}
    convs = {tag: sum(n.op_type == "Conv" for n in g.node) for tag, g in graphs.items()}
    # min drops one 3x3 conv pair per stage (4 x 2) and 2 fused RepVGG convs per CSP layer (4 x 2)
    assert convs["full"] - convs["min"] == 16 and convs["full"] - convs["b0000_n1_d3"] == 8
    nodes = {tag: len(g.node) for tag, g in graphs.items()}
    assert nodes["min"] < nodes["b0000_n1_d3"] < nodes["full"]
    assert run_script("export_onnx.py", ["-c", BASELINE, "-o", str(tmp_path / "x.onnx"), "--depth", "min"]) == 1
    assert "anydepth.enabled: true" in capsys.readouterr().err


@pytest.mark.parametrize("where, message", [("dir", "is a directory"), ("under_file", "is a file, not a folder")])
def test_bad_output_path_fails_before_building_and_tracing(tmp_path, capsys, monkeypatch, where, message):
    from rtdetr_fine import deploy
    (tmp_path / "a_file").write_text("x")
    out = tmp_path if where == "dir" else tmp_path / "a_file" / "model.onnx"

    def must_not_build(*a, **k):
        raise AssertionError("the model was built before the output path was checked")
    monkeypatch.setattr(deploy, "build_deploy_model", must_not_build)
    capsys.readouterr()
    assert run_script("export_onnx.py", ["-c", BASELINE, "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("export_onnx.py: error: ") and str(out) in err and message in err
    assert "Traceback" not in err


def test_too_small_input_names_the_levels_as_numbers(tmp_path, capsys):
    assert run_script("export_onnx.py", ["-c", BASELINE, "--input-size", "32", "-o", str(tmp_path / "x.onnx")]) == 1
    err = capsys.readouterr().err
    assert "levels [(4, 4), (2, 2), (1, 1)]" in err and "tensor(" not in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())                       # no partial file


@pytest.mark.parametrize("flag, module, package", [("--fp16", "onnxconverter_common", "onnxconverter-common"),
                                                   ("--check", "onnxruntime", "onnxruntime")])
def test_a_missing_optional_package_is_named_before_any_work(tmp_path, capsys, monkeypatch, flag, module, package):
    """Issue 25: --fp16 without onnxconverter-common failed after the export and left an fp32 file at -o."""
    from rtdetr_fine import deploy

    def must_not_build(*a, **k):
        raise AssertionError("the model was built before the optional packages were checked")
    monkeypatch.setattr(deploy, "build_deploy_model", must_not_build)
    monkeypatch.setitem(sys.modules, module, None)   # `import module` raises ImportError
    out = tmp_path / "model.onnx"
    capsys.readouterr()
    assert run_script("export_onnx.py", ["-c", BASELINE, "-o", str(out), flag]) == 1
    err = capsys.readouterr().err
    assert f"export_onnx.py: error: export_onnx.py {flag} needs {package}, not installed here: pip install {package}" \
        in err
    assert not out.exists()


def test_each_per_depth_file_is_kept_apart_from_the_inputs(tmp_path, capsys):
    """--depth with several depths writes FILE_<tag>.onnx: each of those, not only -o, must not be an input."""
    config = tmp_path / "m_min.onnx"                       # a config whose name a per-depth output takes
    config.write_text(f"__include__: {os.path.join(ROOT, 'configs', 'rtdetr_r18_anydepth.yml')}\n")
    before = config.read_text()
    code = run_script("export_onnx.py", ["-c", str(config), "-o", str(tmp_path / "m.onnx"), "--depth", "full", "min"])
    err = capsys.readouterr().err
    assert code == 1 and f"-o {tmp_path / 'm_min.onnx'} is the input -c {config}" in err, err
    assert config.read_text() == before and not (tmp_path / "m_full.onnx").exists()   # nothing written
