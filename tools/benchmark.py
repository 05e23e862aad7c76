"""Cost of RT-DETR and its FINE variants on this machine: the FINE paper's Table 3, CPU edition.

For each config: parameters, GFLOPs, latency in PyTorch eager and in onnxruntime
(batch 1, deploy mode, CPU), and the peak memory increase of one inference;
ratios against the first config of the same detector family (RT-DETR rows against the
first RT-DETR config, SSD300 rows against the first SSD300 config). Each config runs at
its own input size, its `val_dataloader.image_size` (640 for the RT-DETR configs, 300 for
SSD300), unless --input-size gives one size for all. Writes benchmark.json, benchmark.md
and benchmark.png to --out-dir.

    python tools/benchmark.py --ablation                     # baseline R18 + the three FINE modes
    python tools/benchmark.py --compare --runs 100           # + CFSAM; SSD300 (+ CFSAM); next to the papers
    python tools/benchmark.py -c configs/rtdetr_r18.yml configs/rtdetr_r18_fine.yml --runs 50
    python tools/benchmark.py --ablation --input-size 320 --runs 3 --out-dir /tmp/bench
    python tools/benchmark.py -c configs/rtdetr_r18.yml --onnx official=official_r18.onnx --runs 100
    python tools/benchmark.py --anydepth -c configs/rtdetr_r50_anydepth.yml --runs 100   # one row per depth

--anydepth times one any-depth config at the depths of anydepth.benchmark_depths (full, each
backbone stage skipped alone, the neck skipped alone, all skips, min), all copies of one built
model, each exported with only the layers it runs; the plot is latency vs GFLOPs, a point per depth.

--compare times, in one run, RT-DETR R18, + FINE (each attention mode), + CFSAM at 640 and
SSD300, SSD300 + CFSAM at 300 (the VOC configs, as the paper's table), and puts the papers' figures
next to ours: the FINE paper's Table 3 (Jetson Orin Nano, TensorRT) for the RT-DETR rows,
the CFSAM paper's Table 4 (VOC, GPU) for the SSD300 rows; see PAPER_FIGURES.

--onnx adds ONNX files exported elsewhere with the same interface (inputs `images`,
`orig_target_sizes`), e.g. the official RT-DETR's tools/export_onnx.py output: they
are timed in onnxruntime in the same turns as the configs (params, GFLOPs and
eager latency n/a).

What is measured:
  * params: all parameters of the detector (deploy mode: RepVGG blocks fused); any-depth
    models: the parameters the depth runs (anydepth.count_depth_params), all in params_total.
  * GFLOPs: rtdetr_fine.evaluation.flops.count_flops, 2 x multiply-accumulates of matrix
    products and convolutions, attention included (see rtdetr_fine/evaluation/flops.py).
  * latency: median (and min) wall time of `--runs` single-image inferences after
    `--warmup` ones; model + post-processor, i.e. what export_onnx.py (rtdetr_fine/deploy.py) exports.
    Steady state: the models take turns in blocks of `--block` consecutive runs,
    each block after one untimed run (see time_in_blocks), so a change in
    background load hits all of them alike; runs during which other processes
    used the CPU (from /proc/stat) are left out of the median when enough quiet
    runs remain (see latency_stats). torch and onnxruntime both get `--threads`
    intra-op threads; the load average before and after is recorded.
  * memory: the increase of the process's peak resident set size (Linux VmHWM,
    reset through /proc/self/clear_refs, after returning freed heap to the OS)
    over the first inference in eager mode, and over creating the onnxruntime
    session plus its first run (weights + arena). Not measured elsewhere (null).
"""
import argparse
import contextlib
import copy
import ctypes
import json
import os
import platform
import statistics
import sys
import time

import torch

from rtdetr_fine import cli, deploy
from rtdetr_fine.anydepth import (benchmark_depths, count_depth_params, depth_spec, depth_tag, is_anydepth,
                                  layout_of, set_depth)
from rtdetr_fine.config import image_hw, load_config
from rtdetr_fine.evaluation.flops import count_flops, count_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ABLATION = (
    ("baseline", "configs/rtdetr_r18.yml"),
    ("quadratic", "configs/ablation/rtdetr_r18_fine_quadratic.yml"),
    ("linear", "configs/ablation/rtdetr_r18_fine_linear.yml"),
    ("linear_bottleneck", "configs/ablation/rtdetr_r18_fine_linear_bottleneck.yml"),
)
# --compare: one run over both detector families; each row's ratios are against its family's first row.
COMPARE = (
    ("R18", "configs/rtdetr_r18.yml"),
    ("R18 + FINE quadratic", "configs/ablation/rtdetr_r18_fine_quadratic.yml"),
    ("R18 + FINE linear", "configs/ablation/rtdetr_r18_fine_linear.yml"),
    ("R18 + FINE linear+bottleneck", "configs/ablation/rtdetr_r18_fine_linear_bottleneck.yml"),
    ("R18 + CFSAM", "configs/rtdetr_r18_cfsam.yml"),
    ("SSD300", "configs/ssd300.yml"),
    ("SSD300 + CFSAM", "configs/ssd300_cfsam.yml"),
)
FINE_TABLE_3 = "FINE paper, Table 3 (RT-DETR R18, 640 px, TensorRT 10.7 on a Jetson Orin Nano)"
CFSAM_TABLE_4 = "CFSAM paper, Table 4 (SSD300 on VOC, 300 px, GPU: RTX 3090)"
# The papers' figures for the --compare rows, as printed: the FINE rows give "+" figures on top of
# R18 (added here; the +1.6M parameters are one cell for all three modes), memory is TensorRT's in MB.
# The CFSAM paper gives FPS (latency here = 1000 / FPS) and "GFLOPs" that are multiply-accumulates
# (torchvision's SSD300 has its 26.29M parameters and exactly 31.37 G MAC: README, "CFSAM and SSD300"),
# so they are compared by their ratio only. R18 + CFSAM is our combination: no paper figures.
PAPER_FIGURES = {
    "R18": {"source": FINE_TABLE_3, "params_m": 20.2, "gflops": 61.74, "flops_unit": "2 x MAC",
            "latency_ms": 14.22, "fps": 71, "memory_mb": 63.03},
    "R18 + FINE quadratic": {"source": FINE_TABLE_3, "params_m": 20.2 + 1.6, "gflops": 61.74 + 22.2,
                             "flops_unit": "2 x MAC", "latency_ms": 27.81, "fps": 36, "memory_mb": 63.03 + 280.92},
    "R18 + FINE linear": {"source": FINE_TABLE_3, "params_m": 20.2 + 1.6, "gflops": 61.74 + 11.4,
                          "flops_unit": "2 x MAC", "latency_ms": 18.69, "fps": 55, "memory_mb": 63.03 + 5.86},
    "R18 + FINE linear+bottleneck": {"source": FINE_TABLE_3, "params_m": 20.2 + 1.6, "gflops": 61.74 + 1.3,
                                     "flops_unit": "2 x MAC", "latency_ms": 15.07, "fps": 68,
                                     "memory_mb": 63.03 + 3.12},
    "SSD300": {"source": CFSAM_TABLE_4, "params_m": 26.29, "gflops": 31.37, "flops_unit": "MAC",
               "latency_ms": 1000 / 38, "fps": 38, "memory_mb": None},
    "SSD300 + CFSAM": {"source": CFSAM_TABLE_4, "params_m": 45.16, "gflops": 45.22, "flops_unit": "MAC",
                       "latency_ms": 1000 / 57, "fps": 57, "memory_mb": None},
}
RATIO_KEYS = ("params", "gflops", "eager_ms", "ort_ms")
PAPER_RATIO_KEYS = ("params_m", "gflops", "latency_ms", "memory_mb")


class BenchmarkError(cli.UserError):
    """A user-facing failure (bad argument, config or ONNX file): printed without a traceback."""


# ----------------------------------------------------------------------------- measuring

def _status_kib(key):
    """A field of /proc/self/status in KiB (VmRSS, VmHWM), or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_free_memory():
    """Return freed heap pages to the OS (glibc), so they do not hide the next peak."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak RSS increase (MiB) inside the `with` block; `.mib` is None where unsupported."""

    def __enter__(self):
        self.mib = None
        _release_free_memory()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            self._start = _status_kib("VmRSS")
        except OSError:
            self._start = None
        return self

    def __exit__(self, *exc):
        peak = _status_kib("VmHWM")
        if self._start is not None and peak is not None:
            self.mib = (peak - self._start) / 1024
        return False


class CpuMonitor:
    """CPU time other processes used during a measurement, from /proc/stat (Linux; None elsewhere).

    `other_seconds()` after `start()`: (all busy CPU time) - (this process's CPU time).
    """

    def __init__(self):
        self.available = os.path.exists("/proc/stat")
        self.tick = os.sysconf("SC_CLK_TCK") if self.available else 100

    def _busy_ticks(self):
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:8]]
        return sum(fields) - fields[3] - fields[4]  # minus idle and iowait

    def start(self):
        if self.available:
            self._busy, self._own = self._busy_ticks(), sum(os.times()[:2])

    def other_seconds(self):
        if not self.available:
            return None
        return (self._busy_ticks() - self._busy) / self.tick - (sum(os.times()[:2]) - self._own)


def _is_quiet(seconds, other):
    return other is not None and other <= max(0.02, 0.05 * seconds)


def latency_stats(samples):
    """[(seconds, other-process CPU seconds or None, block index)] -> summary in ms.

    A run is "quiet" when other processes used at most max(20 ms, 5% of its duration)
    of CPU time meanwhile (/proc/stat counts in 10 ms ticks). The median is over the
    quiet runs when at least half of the runs were quiet, else over all runs, and
    then `contended` is set.
    """
    seconds = [t for t, *_ in samples]
    quiet = [t for t, other, _ in samples if _is_quiet(t, other)]
    use = quiet if len(quiet) * 2 >= len(samples) else seconds
    return {"median_ms": 1e3 * statistics.median(use), "min_ms": 1e3 * min(seconds), "runs": len(samples),
            "quiet_runs": len(quiet), "contended": use is seconds}


def time_in_blocks(fns, runs, warmup, block=5):
    """Steady-state latency: each fn runs `block` times in a row, fns take turns, until each has `runs`.

    Every block starts with one untimed call: the first run after another model
    pays for that model's caches and idle worker threads, which is not the
    model's own latency. On this 2-core VM, alternating models call by call
    measured the R18 graph at 215 ms median in onnxruntime, runs in blocks at
    178 ms within the same quarter of an hour. Taking turns by blocks still
    spreads slow spells of background load over all models. `warmup` untimed
    calls per fn come first.

    Returns per-fn lists of (seconds, CPU seconds other processes used meanwhile,
    index of the block).
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    monitor = CpuMonitor()
    samples = [[] for _ in fns]
    block_index = 0
    while any(len(out) < runs for out in samples):
        for fn, out in zip(fns, samples):
            todo = min(block, runs - len(out))
            if todo <= 0:
                continue
            fn()
            for _ in range(todo):
                monitor.start()
                start = time.perf_counter()
                fn()
                elapsed = time.perf_counter() - start
                out.append((elapsed, monitor.other_seconds(), block_index))
        block_index += 1
    return samples


def _block_medians(samples):
    """{block index: median seconds over the block's quiet runs (all runs if none was quiet)}."""
    blocks = {}
    for seconds, other, index in samples:
        blocks.setdefault(index, []).append((seconds, _is_quiet(seconds, other)))
    return {i: statistics.median([t for t, q in runs if q] or [t for t, _ in runs]) for i, runs in blocks.items()}


def paired_ratio(reference, samples):
    """Latency ratio to the reference, robust to drifting machine speed.

    Each block of `samples` ran right after the reference's block with the same index
    and right before its next one (time_in_blocks takes turns in a fixed order, the
    reference first), so it is compared with the mean of those two reference blocks.
    Returns the median of these per-block ratios (None without blocks).
    """
    ref, own = _block_medians(reference), _block_medians(samples)
    ratios = []
    for i, value in own.items():
        neighbours = [ref[j] for j in (i, i + 1) if j in ref]
        if neighbours:
            ratios.append(value / statistics.mean(neighbours))
    return statistics.median(ratios) if ratios else None


class Candidate:
    """One config under test: the deploy model, its ONNX export and onnxruntime session.

    `model`: an already built deploy model to use instead of building the config's (any-depth:
    a copy of one model, set to its depth).
    """

    def __init__(self, name, config, overrides, size, threads, work_dir, model=None):
        """size: (height, width), or None for the config's val_dataloader.image_size."""
        self.name, self.config = name, config
        self.model = model or deploy.build_deploy_model(config, overrides=overrides, log=lambda *a: None)
        height, width = size or image_hw(self.model.image_size)
        try:   # SSD300 takes any size (>= 268 px), RT-DETR multiples of 32
            deploy.check_input_size(height, width, deploy.size_divisibility(self.model.model))
        except ValueError as e:
            raise BenchmarkError(f"{name}: {e}") from None
        self.images, self.sizes = deploy.example_inputs(1, height, width)
        self.onnx_path = os.path.join(work_dir, f"{safe_name(name)}.onnx")
        self.threads = threads
        self.session = None
        self.result = {"name": name, "config": config, "family": load_config(config, overrides)["detector"],
                       "input_size": [height, width]}

    def count(self):
        """Cold first inference (memory), then params and FLOPs of the detector."""
        with torch.inference_mode(), PeakMemory() as mem:
            try:
                self.model(self.images, self.sizes)
            except ValueError as e:  # the model rejects the input size (e.g. fewer tokens than queries)
                raise BenchmarkError(f"{self.name}: {e}") from None
        self.result["eager_peak_mib"] = mem.mib
        self.result["params"] = count_params(self.model.model)
        if is_anydepth(self.model.model):   # what this depth runs; the unused twins and skipped blocks apart
            self.result["params_total"] = self.result["params"]
            self.result["params"] = count_depth_params(self.model.model)
        self.result["gflops"] = count_flops(self.model.model, self.images) / 1e9

    def export(self):
        """ONNX export, then a fresh onnxruntime session and its first run (memory)."""
        height, width = self.images.shape[-2:]
        deploy.export(self.model, self.onnx_path, height, width, batch_size=1)
        with PeakMemory() as mem:
            self.session = deploy.onnxruntime_session(self.onnx_path, self.threads)
            self.run_ort()
        self.result["ort_peak_mib"] = mem.mib

    def run_eager(self):
        with torch.inference_mode():
            self.model(self.images, self.sizes)

    def run_ort(self):
        self.session.run(None, {"images": self.images.numpy(), "orig_target_sizes": self.sizes.numpy()})


class OnnxFile:
    """An ONNX file exported elsewhere (e.g. by the official RT-DETR), timed in onnxruntime only."""

    def __init__(self, name, path, height, width, threads):
        self.name = name
        self.images, self.sizes = deploy.example_inputs(1, height, width)
        with PeakMemory() as mem:
            try:
                self.session = deploy.onnxruntime_session(path, threads)
            except Exception as e:  # onnxruntime raises its own exception types
                raise BenchmarkError(f"--onnx {name}={path}: onnxruntime cannot load it: {e}") from None
            inputs = {i.name for i in self.session.get_inputs()}
            if inputs != {"images", "orig_target_sizes"}:
                raise BenchmarkError(f"--onnx {name}={path}: inputs are {sorted(inputs)}, expected "
                                              f"images and orig_target_sizes (the RT-DETR deploy interface)")
            try:
                self.run_ort()
            except Exception as e:
                raise BenchmarkError(f"--onnx {name}={path}: does not run on a 1x3x{height}x{width} "
                                              f"input: {e}") from None
        self.result = {"name": name, "config": None, "family": None, "input_size": [height, width],
                       "onnx": os.path.abspath(path), "params": None,
                       "gflops": None, "eager_ms": None, "eager_min_ms": None, "eager_peak_mib": None,
                       "eager_contended": False, "ort_peak_mib": mem.mib}

    run_ort = Candidate.run_ort


# ----------------------------------------------------------------------------- reporting

def reference_indices(results):
    """Index of each result's reference: the first result of its detector family (`family`: rtdetr,
    ssd300); results without one (--onnx files) are compared with the first result."""
    first = {}
    for i, r in enumerate(results):
        if r.get("family"):
            first.setdefault(r["family"], i)
    return [first.get(r.get("family"), 0) for r in results]


def add_ratios(results):
    """ratios[k] = value / its reference's value (reference_indices), for params, GFLOPs and latencies."""
    for r, i in zip(results, reference_indices(results)):
        reference = results[i]
        r["ratios"] = {k: r[k] / reference[k] for k in RATIO_KEYS if r.get(k) and reference.get(k)}
        r["ratios"]["reference"] = reference["name"]
    return results


def add_paper_figures(results):
    """`paper`: PAPER_FIGURES of the rows named there, with their ratios to the figures of the
    row's reference (the same reference as ours: both families have their baseline in the paper)."""
    for r, i in zip(results, reference_indices(results)):
        figures = PAPER_FIGURES.get(r["name"])
        if figures is None:
            continue
        reference = PAPER_FIGURES.get(results[i]["name"], {})
        r["paper"] = dict(figures, ratios={k: figures[k] / reference[k] for k in PAPER_RATIO_KEYS
                                           if figures.get(k) and reference.get(k)})
    return results


def _fmt(value, spec):
    return "n/a" if value is None else format(value, spec)


def _cell(r, key, spec, scale=1.0):
    """'value (xratio, paired xratio)' for the Markdown table; * marks a contended latency; n/a if not measured."""
    if r.get(key) is None:
        return "n/a"
    text = f"{r[key] / scale:{spec}}"
    paired = None
    if key.endswith("_ms"):  # a latency: eager_ms / ort_ms
        runtime = key[:-len("_ms")]
        text += "*" if r.get(f"{runtime}_contended") else ""
        if r["name"] != r["ratios"]["reference"]:
            paired = r.get(f"{runtime}_paired_ratio")
    ratio = r["ratios"].get(key)
    if ratio is None:
        return text
    return f"{text} (x{ratio:.3f}" + ("" if paired is None else f", paired x{paired:.3f}") + ")"


def _input_text(settings):
    if settings["input_size"] is None:
        return "Input: each config's val_dataloader.image_size (column 'input')"
    return f"Input {settings['input_size'][0]}x{settings['input_size'][1]}"


def _paper_cells(r):
    """The paper columns of a row: params, GFLOPs, latency and memory, each with its ratio."""
    paper = r.get("paper")
    if paper is None:
        return ["–"] * 4
    cells = []
    for key, spec, unit in (("params_m", ".2f", ""), ("gflops", ".2f", f" ({paper['flops_unit']})"),
                            ("latency_ms", ".2f", f" ({paper['fps']} FPS)"), ("memory_mb", ".2f", "")):
        if paper.get(key) is None:
            cells.append("–")
            continue
        ratio = paper["ratios"].get(key)
        cells.append(f"{paper[key]:{spec}}{unit}" + ("" if ratio is None or r["name"] == r["ratios"]["reference"]
                                                     else f" (x{ratio:.3f})"))
    return cells


def markdown_table(report):
    s = report["settings"]
    results = report["results"]
    references = sorted({r["ratios"]["reference"] for r in results}, key=[r["name"] for r in results].index)
    with_paper = any("paper" in r for r in results)
    lines = [
        f"{_input_text(s)}, batch 1, {s['threads']} threads (torch and onnxruntime), "
        f"median of {s['runs']} runs after {s['warmup']} warm-up, in blocks of {s['block']} per model; "
        f"CPU: {s['cpu']}; "
        f"load average before/after: {s['load_before']:.2f}/{s['load_after']:.2f}; latencies are medians over "
        f"runs without other CPU load (* = too few such runs, median over all). "
        f"Ratios vs {' / '.join(references)} (the first row of each detector family): ratio of medians, and "
        f"'paired': median over blocks of "
        f"(block median / mean of the reference's blocks just before and after), which follows drifts in "
        f"machine speed. Memory: {s['memory_note']}",
        *([f"Depths of {results[0]['config']}: bXXXX = skip flags of backbone stages res2..res5, "
           "nN = neck skip, dN = decoder layers run (specs in benchmark.json); params = those the depth runs."]
          if s.get("anydepth") else []),
        *(["Paper columns: " + "; ".join(sorted({r["paper"]["source"] for r in results if "paper" in r}))
           + ". Their ratios are against the same baseline row as ours; the CFSAM paper's \"GFLOPs\" are "
             "multiply-accumulates and its latency is 1000 / FPS; the papers' memory is TensorRT's, not "
             "a process's peak RSS; R18 + CFSAM is not in either paper."] if with_paper else []),
        "",
        "| model | input | params (M) | GFLOPs | PyTorch eager (ms) | onnxruntime (ms) | eager peak +MiB | ORT peak +MiB |"
        + (" paper: params (M) | paper: GFLOPs | paper: latency (ms) | paper: memory (MB) |" if with_paper else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|---|---|---|" if with_paper else ""),
    ]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['input_size'][0]}x{r['input_size'][1]} | {_cell(r, 'params', '.2f', 1e6)} "
            f"| {_cell(r, 'gflops', '.2f')} "
            f"| {_cell(r, 'eager_ms', '.1f')} | {_cell(r, 'ort_ms', '.1f')} "
            f"| {_fmt(r['eager_peak_mib'], '.0f')} | {_fmt(r['ort_peak_mib'], '.0f')} |"
            + ("".join(f" {c} |" for c in _paper_cells(r)) if with_paper else ""))
    return "\n".join(lines) + "\n"


def plot(report, path):
    """Bar charts of GFLOPs and the two latencies, one bar per model (grey: a family's reference);
    with paper figures, a fourth panel: latency ratio to the reference, ours (onnxruntime) vs the paper's."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    results = report["results"]
    names = [r["name"] for r in results]
    panels = [("gflops", "GFLOPs"), ("eager_ms", "PyTorch eager (ms)"), ("ort_ms", "onnxruntime (ms)")]
    with_paper = any("paper" in r for r in results)
    fig, axes = plt.subplots(1, len(panels) + with_paper, figsize=(4.2 * (len(panels) + with_paper), 3.8))
    for ax, (key, title) in zip(axes, panels):
        values = [r[key] or 0.0 for r in results]  # n/a (external ONNX files) drawn as no bar
        colors = ["0.6" if r["name"] == r["ratios"]["reference"] else "tab:blue" if r.get("config")
                  else "tab:orange" for r in results]  # grey: references, orange: --onnx files
        bars = ax.bar(range(len(names)), values, color=colors)
        for bar, r in zip(bars, results):
            if key in r["ratios"]:
                ax.annotate(f"x{r['ratios'][key]:.3f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
        ax.set_title(title)
        ax.set_ylim(0, 1.15 * max(values + [1e-9]))
    if with_paper:
        ax, x = axes[-1], range(len(names))
        ours = [r["ratios"].get("ort_ms", 0.0) for r in results]
        paper = [r.get("paper", {}).get("ratios", {}).get("latency_ms", 0.0) for r in results]
        ax.bar([i - 0.2 for i in x], ours, width=0.4, label="ours, onnxruntime (CPU)", color="tab:blue")
        ax.bar([i + 0.2 for i in x], paper, width=0.4, label="paper (GPU)", color="tab:green")
        ax.axhline(1.0, color="0.5", lw=0.8)
        ax.set_xticks(list(x), names, rotation=20, ha="right", fontsize=8)
        ax.set_title("latency / own baseline")
        ax.legend(fontsize=7)
    s = report["settings"]
    size = "input per config" if s["input_size"] is None else f"{s['input_size'][0]}x{s['input_size'][1]}"
    fig.suptitle(f"{size}, batch 1, {s['threads']} threads, CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_depths(report, path):
    """Any-depth: latency vs GFLOPs, one point per depth, for each runtime timed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    results = report["results"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for key, label, marker in (("eager_ms", "PyTorch eager", "o"), ("ort_ms", "onnxruntime", "s")):
        points = [(r["gflops"], r[key], r["name"]) for r in results if r.get(key) is not None]
        if not points:
            continue
        ax.plot([p[0] for p in points], [p[1] for p in points], marker, label=label)
        for x, y, name in points:
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.set_xlabel("GFLOPs")
    ax.set_ylabel("latency (ms)")
    ax.legend()
    s = report["settings"]
    height, width = results[0]["input_size"]
    ax.set_title(f"{os.path.basename(results[0]['config'])}: one point per depth, "
                 f"{height}x{width}, {s['threads']} threads, CPU", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(report, out_dir):
    """benchmark.json / .md / .png in out_dir; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: os.path.join(out_dir, f"benchmark.{ext}") for ext in ("json", "md", "png")}
    with open(paths["json"], "w") as f:
        json.dump(report, f, indent=2)
    with open(paths["md"], "w") as f:
        f.write(markdown_table(report))
    (plot_depths if report["settings"].get("anydepth") else plot)(report, paths["png"])
    return paths


# ----------------------------------------------------------------------------- CLI

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("-c", "--config", nargs="+", help="config(s); ratios are against the first")
    what.add_argument("--ablation", action="store_true", help="baseline R18 + FINE quadratic/linear/linear_bottleneck")
    what.add_argument("--compare", action="store_true",
                      help="R18, + FINE (each mode), + CFSAM at 640; SSD300, SSD300 + CFSAM at 300; ratios to each "
                           "family's baseline, next to the papers' figures (FINE Table 3, CFSAM Table 4)")
    p.add_argument("--anydepth", action="store_true",
                   help="with -c CONFIG (one any-depth config): a row per depth (full, each backbone stage skipped "
                        "alone, neck skipped alone, all skips, min); plot: latency vs GFLOPs")
    p.add_argument("-u", "--update", nargs="*", default=[], help="config overrides for every config, key=value")
    p.add_argument("--input-size", type=int, nargs="+", metavar="S",
                   help="S or H W for every config (default: each config's val_dataloader.image_size)")
    p.add_argument("--runs", type=int, default=20, help="timed runs per model and runtime (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    p.add_argument("--block", type=int, default=5,
                   help="consecutive timed runs per model before the next model's turn (default 5)")
    p.add_argument("--no-eager", action="store_true", help="time onnxruntime only (eager columns n/a)")
    p.add_argument("--onnx", nargs="+", default=[], metavar="NAME=PATH",
                   help="also time these ONNX files (RT-DETR deploy interface) in onnxruntime, "
                        "e.g. official=official_r18.onnx")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="intra-op threads for torch and onnxruntime (default: all cores)")
    p.add_argument("--out-dir", default="output/benchmark", help="where benchmark.{json,md,png} and the ONNX files go")
    return p.parse_args(argv)


def safe_name(name):
    """A row name as a file name ('R18 + FINE linear' -> 'R18_+_FINE_linear')."""
    return "".join(c if c.isalnum() or c in "+-_." else "_" for c in name)


def input_hw(sizes):
    """--input-size values -> (height, width), or None (each config's own size). Each model checks
    that the size suits it (RT-DETR: multiples of 32)."""
    if sizes is None:
        return None
    if len(sizes) not in (1, 2):
        raise BenchmarkError(f"--input-size takes S or H W, got {sizes}")
    height, width = (sizes[0], sizes[0]) if len(sizes) == 1 else sizes
    if height <= 0 or width <= 0:
        raise BenchmarkError(f"--input-size: the input size must be positive, got {height}x{width}")
    return height, width


def parse_onnx_args(items):
    """['name=path', ...] -> [(name, path)]; a bare path is named after its file."""
    out = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = os.path.splitext(os.path.basename(item))[0], item
        if not name or not path:
            raise BenchmarkError(f"--onnx {item!r}: expected NAME=PATH")
        if not os.path.isfile(path):
            raise BenchmarkError(f"--onnx {name}={path}: file not found")
        out.append((name, path))
    return out


def candidates_from(args):
    """[(name, config path)] to benchmark; config paths are resolved against the repo root too."""
    if args.ablation or args.compare:
        return [(name, os.path.join(ROOT, path)) for name, path in (ABLATION if args.ablation else COMPARE)]
    out, seen = [], set()
    for path in args.config:
        if not os.path.isfile(path) and os.path.isfile(os.path.join(ROOT, path)):
            path = os.path.join(ROOT, path)
        name = os.path.splitext(os.path.basename(path))[0]
        while name in seen:
            name += "_"
        seen.add(name)
        out.append((name, path))
    return out


def anydepth_candidates(config, overrides):
    """[(depth tag, config, deploy model at that depth, depth spec)]: copies of one built any-depth model."""
    base = deploy.build_deploy_model(config, overrides=overrides, log=lambda *a: None)
    if not is_anydepth(base.model):
        raise BenchmarkError(f"--anydepth: {config} is not an any-depth config (anydepth.enabled: false)")
    layout = layout_of(base.model)
    out = []
    for depth in benchmark_depths(layout):
        model = copy.deepcopy(base)
        set_depth(model.model, depth)
        out.append((depth_tag(depth, layout), config, model, depth_spec(depth)))
    return out


def record_latencies(models, runtime, args):
    """Time `runtime` ("eager" or "ort") of the models in blocks; adds <runtime>_ms, _min_ms,
    _quiet_runs, _contended and _paired_ratio (against the model's reference, reference_indices; it
    comes earlier in the order, as paired_ratio needs) to their results."""
    timed = time_in_blocks([getattr(m, f"run_{runtime}") for m in models], args.runs, args.warmup, args.block)
    references = reference_indices([m.result for m in models])
    for m, samples, reference in zip(models, timed, references):
        stats = latency_stats(samples)
        m.result.update({f"{runtime}_ms": stats["median_ms"], f"{runtime}_min_ms": stats["min_ms"],
                         f"{runtime}_quiet_runs": stats["quiet_runs"], f"{runtime}_contended": stats["contended"],
                         f"{runtime}_paired_ratio": paired_ratio(timed[reference], samples)})


def run(args, log=print):
    """Benchmark and write the outputs; returns the report dict."""
    size = input_hw(args.input_size)
    if args.runs < 1 or args.threads < 1 or args.warmup < 0 or args.block < 1:
        raise BenchmarkError("--runs, --threads and --block must be >= 1, --warmup >= 0")
    if args.anydepth and (args.ablation or len(args.config) != 1):
        raise BenchmarkError("--anydepth takes one any-depth config: --anydepth -c configs/rtdetr_r50_anydepth.yml")
    onnx_files = parse_onnx_args(args.onnx)
    cli.check_output_dir(args.out_dir, "--out-dir")   # before the models are built and timed
    torch.set_num_threads(args.threads)
    work_dir = os.path.join(args.out_dir, "onnx")
    os.makedirs(work_dir, exist_ok=True)
    load_before = os.getloadavg()[0]
    if load_before > 0.5:
        log(f"note: load average is {load_before:.2f}; other processes may slow the timings")

    models = []
    if args.anydepth:
        todo = anydepth_candidates(candidates_from(args)[0][1], args.update)
    else:
        todo = [(name, config, None, None) for name, config in candidates_from(args)]
    for name, config, model, depth in todo:
        log(f"[{name}] build, count, export ({config}{', depth ' + depth if depth else ''})")
        candidate = Candidate(name, config, args.update, size, args.threads, work_dir, model)
        if depth:
            candidate.result["depth"] = depth
        candidate.count()
        candidate.export()
        models.append(candidate)

    for name, path in onnx_files:
        log(f"[{name}] onnxruntime session for {path}")
        models.append(OnnxFile(name, path, *(size or models[0].result["input_size"]), args.threads))
    exported = [m for m in models if isinstance(m, Candidate)]

    if args.no_eager:
        for m in exported:
            m.result.update(eager_ms=None, eager_min_ms=None, eager_contended=False)
        exported = []
    else:
        log(f"timing PyTorch eager: {args.runs} runs of {len(exported)} models in blocks of {args.block}")
    record_latencies(exported, "eager", args)
    log(f"timing onnxruntime: {args.runs} runs of {len(models)} models in blocks of {args.block}")
    record_latencies(models, "ort", args)

    import onnxruntime
    report = {
        "settings": {
            "input_size": list(size) if size else None, "batch_size": 1, "threads": args.threads, "runs": args.runs,
            "anydepth": args.anydepth,
            "warmup": args.warmup, "block": args.block, "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "load_before": load_before, "load_after": os.getloadavg()[0],
            "latency": "median wall time of single-image inferences (model + post-processor), deploy mode",
            "memory_note": "peak RSS increase (VmHWM) over the first eager inference, and over ORT "
                           "session creation + first run",
        },
        "results": add_paper_figures(add_ratios([m.result for m in models])),
    }
    paths = write_outputs(report, args.out_dir)
    log(markdown_table(report))
    log("wrote " + ", ".join(paths.values()))
    return report


def work(argv=None):
    """The command line's work; main() runs it behind the error boundary (rtdetr_fine/cli.py)."""
    run(parse_args(argv))


def main(argv=None) -> int:
    """Exit code 0 on success; a user error is one line on stderr and exit code 1."""
    return cli.run_main(work, argv, prog="benchmark.py")


if __name__ == "__main__":
    sys.exit(main())
