"""tools/benchmark.py run in-process with tiny settings: outputs written, FLOP ordering of Table 3;
the pieces of tools/benchmarking/ (timing, ratios, the --compare rows) on their own."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))

pytest.importorskip("onnxruntime")
pytest.importorskip("matplotlib")
benchmark = pytest.importorskip("benchmark")
from benchmarking import configs, papers, timing  # noqa: E402  (tools/ is on sys.path)
from benchmarking.report import add_ratios, reference_indices  # noqa: E402

RESULT_FIELDS = {"name", "config", "params", "gflops", "eager_ms", "eager_min_ms", "ort_ms", "ort_min_ms",
                 "eager_peak_mib", "ort_peak_mib", "ratios"}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("bench")
    # an ONNX file exported elsewhere (here: by rtdetr_fine.deploy) is timed next to the configs
    from rtdetr_fine import deploy
    external = str(out_dir / "external_r18.onnx")
    deploy.export(deploy.build_deploy_model(os.path.join(ROOT, "configs", "rtdetr_r18.yml"), log=lambda *a: None),
                  external, 160, 160)
    args = benchmark.parse_args(["--ablation", "--input-size", "160", "--runs", "2", "--warmup", "1",
                                 "--block", "2", "--threads", "2", "--out-dir", str(out_dir),
                                 "--onnx", f"external={external}"])
    benchmark.run(args, log=lambda *a: None)
    return out_dir


def test_writes_json_markdown_and_png(report):
    data = json.loads((report / "benchmark.json").read_text())
    assert {"input_size", "threads", "runs", "warmup", "load_before", "load_after", "memory_note"} <= set(data["settings"])
    assert data["settings"]["input_size"] == [160, 160] and data["settings"]["threads"] == 2
    assert data["settings"]["block"] == 2
    names = [r["name"] for r in data["results"]]
    assert names == ["baseline", "quadratic", "linear", "linear_bottleneck", "external"]
    for r in data["results"][:4]:
        assert RESULT_FIELDS <= set(r), r["name"]
        assert r["eager_ms"] > 0 and r["ort_ms"] > 0 and r["ratios"]["reference"] == "baseline"
    external = data["results"][4]
    assert external["ort_ms"] > 0 and "ort_ms" in external["ratios"]
    assert external["params"] is external["gflops"] is external["eager_ms"] is None
    assert data["results"][0]["ratios"]["gflops"] == 1.0
    table = (report / "benchmark.md").read_text()
    assert "| linear_bottleneck |" in table and "onnxruntime (ms)" in table and "2 threads" in table
    assert "| external | 160x160 | n/a | n/a | n/a |" in table
    assert (report / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_flops_and_params_follow_table_3(report):
    rows = {r["name"]: r for r in json.loads((report / "benchmark.json").read_text())["results"]}
    gflops = [rows[n]["gflops"] for n in ("quadratic", "linear", "linear_bottleneck", "baseline")]
    assert gflops == sorted(gflops, reverse=True) and len(set(gflops)) == 4
    assert rows["linear"]["params"] == rows["linear_bottleneck"]["params"] > rows["baseline"]["params"]


def test_no_eager_times_onnxruntime_only(tmp_path):
    report = benchmark.run(benchmark.parse_args(["-c", "configs/rtdetr_r18.yml", "--input-size", "160", "--runs", "1",
                                                 "--warmup", "0", "--no-eager", "--out-dir", str(tmp_path)]),
                           log=lambda *a: None)
    (result,) = report["results"]
    assert result["eager_ms"] is None and result["ort_ms"] > 0
    assert "| rtdetr_r18 |" in (tmp_path / "benchmark.md").read_text()


def test_help_runs_from_another_folder(tmp_path):
    """The script finds its own package (tools/benchmarking) and the repo's wherever it is started."""
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "benchmark.py"), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "--anydepth" in done.stdout and "python tools/benchmark.py --ablation" in done.stdout


def test_time_in_blocks_runs_each_model_in_blocks_after_an_untimed_call():
    calls = []
    fns = [lambda: calls.append("a"), lambda: calls.append("b")]
    samples = timing.time_in_blocks(fns, runs=5, warmup=1, block=2)
    assert [len(s) for s in samples] == [5, 5]
    assert all(t >= 0 for s in samples for t, *_ in s)
    assert [index for *_, index in samples[0]] == [0, 0, 1, 1, 2]
    # warm-up a, b; then blocks of 1 untimed + 2 timed calls (the last block holds the remaining 1)
    assert "".join(calls) == "ab" + "aaabbb" * 2 + "aabb"


def test_paired_ratio_follows_a_drifting_machine():
    """The machine slows down block after block; the candidate always costs 3% more than the
    reference would at that moment. The paired ratio recovers 1.03, a ratio of medians need not."""
    speed = [1.0, 1.2, 1.5, 1.1, 1.6, 1.3, 1.0]          # per half-round: reference, then candidate
    reference, candidate = [], []
    for block in range(3):
        reference += [(0.1 * speed[2 * block], 0.0, block)] * 3
        between = (speed[2 * block] + speed[2 * block + 2]) / 2
        candidate += [(0.103 * between, 0.0, block)] * 3
    reference += [(0.1 * speed[6], 0.0, 3)] * 3
    assert timing.paired_ratio(reference, candidate) == pytest.approx(1.03)
    noisy = [(0.5, 1.0, 0)] + candidate[1:3]              # a run with other CPU load is left out of its block
    assert timing.paired_ratio(reference, noisy) == pytest.approx(candidate[1][0] / 0.125)


@pytest.mark.parametrize("item, message", [("x=/no/such.onnx", "file not found"), ("=model.onnx", "NAME=PATH")])
def test_bad_onnx_argument_is_a_message(tmp_path, capsys, item, message):
    assert benchmark.main(["-c", "configs/rtdetr_r18.yml", "--input-size", "64", "--runs", "1",
                           "--onnx", item, "--out-dir", str(tmp_path)]) == 1
    assert message in capsys.readouterr().err


def test_too_small_input_for_the_queries_is_a_message(tmp_path, capsys):
    assert benchmark.main(["-c", "configs/rtdetr_r18.yml", "--input-size", "96", "--runs", "1",
                           "--out-dir", str(tmp_path)]) == 1
    assert "fewer than decoder.num_queries=300" in capsys.readouterr().err


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


def test_anydepth_times_every_benchmark_depth_of_one_model(tmp_path):
    report = benchmark.run(benchmark.parse_args([
        "--anydepth", "-c", "configs/rtdetr_r18_anydepth.yml", "-u", "decoder.num_queries=100",
        "postprocessor.num_top_queries=100", "--input-size", "128", "--runs", "1", "--warmup", "0", "--block", "1",
        "--out-dir", str(tmp_path)]), log=lambda *a: None)
    rows = {r["name"]: r for r in report["results"]}
    assert list(rows) == ["full", "b1000_n0_d3", "b0100_n0_d3", "b0010_n0_d3", "b0001_n0_d3", "b0000_n1_d3",
                          "b1111_n1_d3", "min"]
    assert rows["min"]["depth"] == "backbone=1,1,1,1 neck=1 decoder=2"
    assert all(r["eager_ms"] > 0 and r["ort_ms"] > 0 for r in rows.values())
    full = rows["full"]
    assert full["params"] < full["params_total"]       # the unused skip twins are not counted as run
    for name, r in rows.items():
        if name != "full":
            assert r["gflops"] < full["gflops"] and r["params"] < full["params"], name
    assert rows["min"]["gflops"] < rows["b1111_n1_d3"]["gflops"] == min(r["gflops"] for n, r in rows.items()
                                                                          if n != "min")
    assert "bXXXX = skip flags" in (tmp_path / "benchmark.md").read_text()
    assert (tmp_path / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert benchmark.main(["--anydepth", "-c", "configs/rtdetr_r18.yml", "--out-dir", str(tmp_path)]) == 1


def test_ratios_are_against_the_first_row_of_each_family_and_paper_figures_against_theirs():
    rows = [{"name": "R18", "family": "rtdetr", "params": 20e6, "gflops": 60.0, "eager_ms": None, "ort_ms": 100.0},
            {"name": "R18 + FINE linear", "family": "rtdetr", "params": 21e6, "gflops": 66.0, "ort_ms": 120.0},
            {"name": "SSD300", "family": "ssd300", "params": 26e6, "gflops": 63.0, "ort_ms": 200.0},
            {"name": "SSD300 + CFSAM", "family": "ssd300", "params": 45e6, "gflops": 90.0, "ort_ms": 250.0},
            {"name": "external", "family": None, "params": None, "gflops": None, "ort_ms": 110.0}]
    assert reference_indices(rows) == [0, 0, 2, 2, 0]
    results = papers.add_paper_figures(add_ratios(rows))
    by_name = {r["name"]: r for r in results}
    assert by_name["SSD300 + CFSAM"]["ratios"] == pytest.approx(
        {"params": 45 / 26, "gflops": 90 / 63, "ort_ms": 1.25, "reference": "SSD300"})
    assert by_name["R18 + FINE linear"]["ratios"]["ort_ms"] == pytest.approx(1.2)
    assert by_name["external"]["ratios"] == pytest.approx({"ort_ms": 1.1, "reference": "R18"})
    # the papers' ratios: CFSAM Table 4 (38 -> 57 FPS, 31.37 -> 45.22 G MAC), FINE Table 3 (14.22 -> 18.69 ms)
    cfsam = by_name["SSD300 + CFSAM"]["paper"]
    assert cfsam["ratios"]["latency_ms"] == pytest.approx(38 / 57) and cfsam["ratios"]["gflops"] == pytest.approx(
        45.22 / 31.37)
    assert "memory_mb" not in cfsam["ratios"]   # Table 4 has no memory column
    fine = by_name["R18 + FINE linear"]["paper"]
    assert fine["ratios"]["latency_ms"] == pytest.approx(18.69 / 14.22)
    assert fine["ratios"]["gflops"] == pytest.approx((61.74 + 11.4) / 61.74)
    assert "paper" not in by_name["external"]


@pytest.fixture(scope="module")
def compare_report(tmp_path_factory):
    """--compare (onnxruntime only) with the rows made small: configs that include the real ones with
    val_dataloader.image_size 160 for RT-DETR and 268 for SSD300 (the smallest its VGG16 extractor takes)."""
    out_dir = tmp_path_factory.mktemp("compare")
    rows = []
    for name, path in configs.COMPARE:
        small = out_dir / os.path.basename(path)
        size = 268 if "ssd300" in path else 160
        small.write_text(f"__include__: {os.path.join(ROOT, path)}\nval_dataloader:\n  image_size: {size}\n")
        rows.append((name, str(small)))
    saved = configs.COMPARE
    configs.COMPARE = tuple(rows)
    try:
        benchmark.run(benchmark.parse_args(["--compare", "--runs", "1", "--warmup", "0", "--block", "1",
                                            "--no-eager", "--out-dir", str(out_dir)]), log=lambda *a: None)
    finally:
        configs.COMPARE = saved
    return out_dir


def test_compare_runs_each_config_at_its_own_size_against_its_family_baseline(compare_report):
    data = json.loads((compare_report / "benchmark.json").read_text())
    assert data["settings"]["input_size"] is None
    rows = {r["name"]: r for r in data["results"]}
    assert list(rows) == [name for name, _ in configs.COMPARE]
    for name, r in rows.items():
        ssd = name.startswith("SSD300")
        assert r["family"] == ("ssd300" if ssd else "rtdetr")
        assert r["input_size"] == ([268, 268] if ssd else [160, 160]), name
        assert r["ratios"]["reference"] == ("SSD300" if ssd else "R18"), name
        assert r["ort_ms"] > 0 and r["ort_peak_mib"] is not None and r["eager_ms"] is None
    assert rows["SSD300"]["ratios"]["gflops"] == 1.0 and rows["R18"]["ratios"]["gflops"] == 1.0
    assert rows["SSD300 + CFSAM"]["ratios"]["ort_ms"] == pytest.approx(
        rows["SSD300 + CFSAM"]["ort_ms"] / rows["SSD300"]["ort_ms"])
    # SSD300 (VOC, 21 outputs) is the paper's network: 26.29M parameters (docs/cfsam_ssd300.md)
    assert rows["SSD300"]["params"] == 26_285_486
    assert rows["SSD300 + CFSAM"]["ratios"]["params"] == pytest.approx(45_375_918 / 26_285_486)
    assert rows["R18 + CFSAM"]["ratios"]["gflops"] > rows["R18 + FINE quadratic"]["ratios"]["gflops"] > 1
    assert "paper" not in rows["R18 + CFSAM"]
    assert rows["SSD300 + CFSAM"]["paper"]["ratios"]["params_m"] == pytest.approx(45.16 / 26.29)

    table = (compare_report / "benchmark.md").read_text()
    assert "Ratios vs R18 / SSD300" in table and "CFSAM paper, Table 4" in table and "FINE paper, Table 3" in table
    ssd_cfsam = next(line for line in table.splitlines() if line.startswith("| SSD300 + CFSAM |"))
    cells = [c.strip() for c in ssd_cfsam.strip("|").split("|")]
    assert cells[1] == "268x268" and cells[8] == "45.16 (x1.718)" and cells[10].startswith("17.54 (57 FPS) (x0.667)")
    r18_cfsam = next(line for line in table.splitlines() if line.startswith("| R18 + CFSAM |"))
    assert r18_cfsam.rstrip().endswith("| – | – | – | – |")
    assert (compare_report / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_data_job_times_our_loader_and_the_official_pipeline(tmp_path):
    """--data, tiny: both pipelines run over the same generated JPEGs; images/s and the ratio reported."""
    report = benchmark.run(benchmark.parse_args(["--data", "--data-images", "8", "--runs", "2", "--warmup", "0",
                                                 "--block", "1", "--out-dir", str(tmp_path)]), log=lambda *a: None)
    official, ours = report["results"]
    assert (official["name"], ours["name"]) == ("official", "ours")
    assert official["images_per_s"] > 0 and ours["images_per_s"] > 0 and official["speedup"] == 1.0
    assert ours["speedup"] == pytest.approx(ours["images_per_s"] / official["images_per_s"])
    assert ours["paired_speedup"] > 0
    settings = report["settings"]
    assert settings["threads"] == 1 and settings["images"] == 8 and settings["image_size"] == [640, 480]
    assert len(list((tmp_path / "data_jpegs" / "images").glob("*.jpg"))) == 8
    official_stages, our_stages = dict(official["stages_cpu_ms"]), dict(ours["stages_cpu_ms"])
    assert {"decode (PIL)", "RandomIoUCrop (p 0.8)", "Resize (PIL)"} <= set(official_stages)
    assert {"decode (PIL)", "photometric ops (PIL, on the kept part)", "random draws (IoU-crop trials at once)",
            "batch: stack, float, multi-scale resize"} <= set(our_stages)
    assert all(ms >= 0 for ms in [*official_stages.values(), *our_stages.values()])
    table = (tmp_path / "benchmark.md").read_text()
    assert "| ours: build_train_loader |" in table and "vs official" in table and "Where the time goes, ours:" in table
    assert (tmp_path / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert benchmark.main(["--data", "--data-images", "2", "--out-dir", str(tmp_path)]) == 1   # less than a batch


def test_a_missing_package_stops_the_benchmark_before_any_timing(tmp_path, capsys, monkeypatch):
    """matplotlib (the plot, drawn last) missing: one line naming the pip install, before a model is built."""
    import importlib.util
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib"
                        else real_find_spec(name, *a))
    monkeypatch.setattr(configs, "run", lambda *a, **k: pytest.fail("the job started"))
    assert benchmark.main(["--ablation", "--runs", "1", "--out-dir", str(tmp_path / "b")]) == 1
    assert "benchmark.py needs matplotlib, not installed here: pip install matplotlib" in capsys.readouterr().err


def test_anydepth_plot_draws_onnx_files_as_level_lines(tmp_path):
    """An --onnx file has no GFLOPs: the depth plot draws it as a line at its latency (it raised before)."""
    from benchmarking.anydepth import plot_depths
    row = {"config": "configs/rtdetr_r50_anydepth.yml", "input_size": [640, 640], "eager_ms": None}
    report = {"settings": {"threads": 2}, "results": [
        {**row, "name": "full", "gflops": 133.9, "ort_ms": 680.0},
        {**row, "name": "min", "gflops": 81.5, "ort_ms": 440.0},
        {**row, "name": "other_min", "gflops": None, "ort_ms": 436.0, "config": None}]}
    plot_depths(report, str(tmp_path / "depths.png"))
    assert (tmp_path / "depths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_overrides_go_to_the_configs_whose_family_reads_them():
    """--compare mixes RT-DETR and SSD300 configs: -u decoder.* reaches the RT-DETR ones only, ssd.* the SSD300
    ones, shared keys all of them; a key that no config timed reads is refused, naming it."""
    from benchmarking.runner import check_overrides_used, family_overrides
    from benchmarking import BenchmarkError
    r18, ssd = os.path.join(ROOT, "configs", "rtdetr_r18.yml"), os.path.join(ROOT, "configs", "ssd300.yml")
    items = ["decoder.num_queries=100", "ssd.fc_init=random", "seed=3"]
    assert family_overrides(r18, items) == ["decoder.num_queries=100", "seed=3"]
    assert family_overrides(ssd, items) == ["ssd.fc_init=random", "seed=3"]
    check_overrides_used(items, [r18, ssd])
    with pytest.raises(BenchmarkError, match=r"-u 'decoder\.num_queries=100': no config timed here reads it .* "
                                             r"configs timed: SSD300"):
        check_overrides_used(items, [ssd])


def test_profile_sums_onnxruntime_node_time_per_module(tmp_path):
    """--profile: each model's node time per run, per module of the exported model; FINE's modules appear in the
    FINE graph only, and the modules add up to the node total."""
    from benchmarking.profile import OTHER, module_of
    assert module_of("/model/encoder/fine.0/linear1/MatMul/MatMulAddFusion") == "model/encoder/fine.0"
    assert module_of("model/decoder/decoder/query_pos_head/layers.1_1/MatMul") == "model/decoder/decoder"
    assert module_of("ReorderOutput_token_608") == OTHER and module_of("/postprocessor/TopK") == "postprocessor"
    report = benchmark.run(benchmark.parse_args([
        "-c", "configs/rtdetr_r18.yml", "configs/ablation/rtdetr_r18_fine_linear_bottleneck.yml", "--input-size", "128",
        "-u", "decoder.num_queries=100", "postprocessor.num_top_queries=100", "--runs", "1", "--warmup", "0",
        "--block", "1", "--no-eager", "--profile", "2", "--out-dir", str(tmp_path)]), log=lambda *a: None)
    base, fine = (r["ort_profile"] for r in report["results"])
    for p in (base, fine):
        assert p["runs"] == 2 and p["node_ms"] > 0 and abs(sum(p["modules"].values()) - p["node_ms"]) < 1e-6
        assert p["modules"]["model/backbone/res_layers.0"] > 0 and p["ops"]["Conv"] > 0
    assert "model/encoder/fine.0" in fine["modules"] and not any("fine" in m for m in base["modules"])
    text = (tmp_path / "profile.md").read_text()
    assert "### rtdetr_r18_fine_linear_bottleneck" in text and "| model/encoder/fine.0 |" in text
    assert [r["name"] for r in json.loads((tmp_path / "profile.json").read_text())] == [
        "rtdetr_r18", "rtdetr_r18_fine_linear_bottleneck"]
    assert benchmark.main(["--data", "--profile", "3", "--out-dir", str(tmp_path / "d")]) == 1
