"""Job: one any-depth config at the depths of anydepth.benchmark_depths (--anydepth -c CONFIG).

The depths: full, each backbone stage skipped alone, the neck skipped alone, all skips, min; each
row is a copy of one built model set to its depth and exported with only the layers it runs, and
counts the parameters that depth runs. benchmark.png: latency vs GFLOPs, a point per depth.
"""
import copy
import os

from rtdetr_fine import deploy
from rtdetr_fine.anydepth import benchmark_depths, depth_spec, depth_tag, is_anydepth, layout_of, set_depth

from . import BenchmarkError
from .models import resolve_config
from .report import pyplot, save_figure
from .runner import run_models


def check(args):
    """--anydepth takes exactly one config, with -c."""
    if len(args.config or ()) != 1:
        raise BenchmarkError("--anydepth takes one any-depth config: --anydepth -c configs/rtdetr_r50_anydepth.yml")


def depth_rows(config, overrides):
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


def plot_depths(report, path):
    """Latency vs GFLOPs, one point per depth, for each runtime timed; an --onnx file (no GFLOPs) is a
    dotted line at its latency."""
    results = report["results"]
    fig, ax = pyplot().subplots(figsize=(6.4, 4.4))
    for key, label, marker in (("eager_ms", "PyTorch eager", "o"), ("ort_ms", "onnxruntime", "s")):
        timed = [r for r in results if r.get(key) is not None]
        points = [(r["gflops"], r[key], r["name"]) for r in timed if r.get("gflops") is not None]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker, label=label)
        for x, y, name in points:
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
        for r in timed:   # --onnx files: timed, but no GFLOPs to place them by; a level line each
            if r.get("gflops") is None:
                ax.axhline(r[key], linestyle=":", linewidth=0.8, color="gray")
                ax.annotate(r["name"], (0.01, r[key]), xycoords=("axes fraction", "data"), xytext=(0, 2),
                            textcoords="offset points", fontsize=7, color="gray")
    ax.set_xlabel("GFLOPs")
    ax.set_ylabel("latency (ms)")
    ax.legend()
    height, width = results[0]["input_size"]
    ax.set_title(f"{os.path.basename(results[0]['config'])}: one point per depth, "
                 f"{height}x{width}, {report['settings']['threads']} threads, CPU", fontsize=9)
    save_figure(fig, path)


def run(args, log):
    """Time the config at each benchmark depth; returns the report."""
    check(args)
    config = resolve_config(args.config[0])
    return run_models(args, lambda: depth_rows(config, args.update), log, plot=plot_depths)
