"""export_onnx.py, the command line: checkpoint loading, --simplify/--check, errors without tracebacks."""
import os

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
