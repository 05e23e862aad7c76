"""tools/benchmark.py run in-process with tiny settings: outputs written, FLOP ordering of Table 3."""
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

pytest.importorskip("onnxruntime")
pytest.importorskip("matplotlib")
benchmark = pytest.importorskip("benchmark")

RESULT_FIELDS = {"name", "config", "params", "gflops", "eager_ms", "eager_min_ms", "ort_ms", "ort_min_ms",
                 "eager_peak_mib", "ort_peak_mib", "ratios"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("bench")
    args = benchmark.parse_args(["--ablation", "--input-size", "160", "--runs", "2", "--warmup", "1",
                                 "--threads", "2", "--out-dir", str(out_dir)])
    benchmark.run(args, log=lambda *a: None)
    return out_dir


def test_writes_json_markdown_and_png(report):
    data = json.loads((report / "benchmark.json").read_text())
    assert {"input_size", "threads", "runs", "warmup", "load_before", "load_after", "memory_note"} <= set(data["settings"])
    assert data["settings"]["input_size"] == [160, 160] and data["settings"]["threads"] == 2
    assert [r["name"] for r in data["results"]] == ["baseline", "quadratic", "linear", "linear_bottleneck"]
    for r in data["results"]:
        assert RESULT_FIELDS <= set(r), r["name"]
        assert r["eager_ms"] > 0 and r["ort_ms"] > 0 and r["ratios"]["reference"] == "baseline"
    assert data["results"][0]["ratios"]["gflops"] == 1.0
    table = (report / "benchmark.md").read_text()
    assert "| linear_bottleneck |" in table and "onnxruntime (ms)" in table and "2 threads" in table
    assert (report / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_flops_and_params_follow_table_3(report):
    rows = {r["name"]: r for r in json.loads((report / "benchmark.json").read_text())["results"]}
    gflops = [rows[n]["gflops"] for n in ("quadratic", "linear", "linear_bottleneck", "baseline")]
    assert gflops == sorted(gflops, reverse=True) and len(set(gflops)) == 4
    assert rows["linear"]["params"] == rows["linear_bottleneck"]["params"] > rows["baseline"]["params"]


def test_bad_config_is_a_message(tmp_path, capsys):
    assert benchmark.main(["-c", "configs/missing.yml", "--out-dir", str(tmp_path)]) == 1
    assert "config file not found" in capsys.readouterr().err


def test_trt_benchmark_explains_when_tensorrt_is_missing(capsys):
    trt_benchmark = pytest.importorskip("trt_benchmark")
    if trt_benchmark.missing_requirements() is None:
        pytest.skip("TensorRT and a GPU are present")
    assert trt_benchmark.main(["model.onnx"]) == 2
    err = capsys.readouterr().err
    assert "TensorRT benchmark not run" in err and "trtexec" in err
    assert "trtexec --onnx=" in trt_benchmark.__doc__
