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
    python tools/benchmark.py --data --runs 10               # training input pipeline: ours vs the official
    python tools/benchmark.py -c configs/rtdetr_r18.yml configs/rtdetr_r18_fine.yml --no-eager --profile 20
                                                             # + where onnxruntime's time goes, per module

--anydepth times one any-depth config at the depths of anydepth.benchmark_depths (full, each
backbone stage skipped alone, the neck skipped alone, all skips, min), all copies of one built
model, each exported with only the layers it runs; the plot is latency vs GFLOPs, a point per depth.

--data times the training input pipeline, one process and one thread (a DataLoader worker's share):
images/s of build_train_loader (R18 config) and of a torchvision v2 rebuild of the official pipeline
on the same generated JPEGs, and the ratio; see tools/benchmarking/data.py.

--compare times, in one run, RT-DETR R18, + FINE (each attention mode), + FaPN, AdaFPN, MGC (the
FINE paper's Table 2), + CFSAM at 640 and SSD300, SSD300 + CFSAM at 300 (the VOC configs, as the
paper's table), and puts the papers' figures next to ours: the FINE paper's Table 3 (Jetson Orin
Nano, TensorRT) for the FINE rows, the CFSAM paper's Table 4 (VOC, GPU) for the SSD300 rows; see
tools/benchmarking/papers.py.

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
    runs remain (see latency_stats; both in tools/benchmarking/timing.py). torch
    and onnxruntime both get `--threads` intra-op threads; the load average before
    and after is recorded.
  * memory: the increase of the process's peak resident set size (Linux VmHWM,
    reset through /proc/self/clear_refs, after returning freed heap to the OS)
    over the first inference in eager mode, and over creating the onnxruntime
    session plus its first run (weights + arena). Not measured elsewhere (null).
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# This file is the command line. tools/benchmarking/ (next to it) holds the machinery the jobs share
# and one module per job; its __init__.py says which file does what.
from benchmarking import anydepth, configs, data, runner  # noqa: E402
from rtdetr_fine import cli  # noqa: E402
from rtdetr_fine.config import config_files  # noqa: E402


def parse_args(argv=None):
    """The command line: what to time (-c, --ablation, --compare, --data; --anydepth), how, and where to write."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("-c", "--config", nargs="+", help="config(s); ratios are against the first")
    what.add_argument("--ablation", action="store_true", help="baseline R18 + FINE quadratic/linear/linear_bottleneck")
    what.add_argument("--compare", action="store_true",
                      help="R18, + FINE (each mode), + FaPN/AdaFPN/MGC, + CFSAM at 640; SSD300, SSD300 + CFSAM at "
                           "300; ratios to each "
                           "family's baseline, next to the papers' figures (FINE Table 3, CFSAM Table 4)")
    what.add_argument("--data", action="store_true",
                      help="the training input pipeline: images/s of build_train_loader and of the official "
                           "pipeline (torchvision v2 on PIL) on generated JPEGs, one thread; a run = a pass over them")
    p.add_argument("--data-images", type=int, default=96, metavar="N",
                   help="--data: generated 640x480 JPEGs per pass (default 96)")
    p.add_argument("--anydepth", action="store_true",
                   help="with -c CONFIG (one any-depth config): a row per depth (full, each backbone stage skipped "
                        "alone, neck skipped alone, all skips, min); plot: latency vs GFLOPs")
    p.add_argument("-u", "--update", nargs="*", default=[],
                   help="config overrides, key=value, for every config whose detector family reads the key "
                        "(--compare: decoder.* goes to the RT-DETR configs, ssd.* to the SSD300 ones)")
    p.add_argument("--input-size", type=int, nargs="+", metavar="S",
                   help="S or H W for every config (default: each config's val_dataloader.image_size)")
    p.add_argument("--runs", type=int, default=20, help="timed runs per model and runtime (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    p.add_argument("--block", type=int, default=5,
                   help="consecutive timed runs per model before the next model's turn (default 5)")
    p.add_argument("--no-eager", action="store_true", help="time onnxruntime only (eager columns n/a)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="after the timing, N runs of each ONNX graph under onnxruntime's profiler: node time per "
                        "module and op type -> profile.{json,md} (tools/benchmarking/profile.py; default 0: off)")
    p.add_argument("--onnx", nargs="+", default=[], metavar="NAME=PATH",
                   help="also time these ONNX files (RT-DETR deploy interface) in onnxruntime, "
                        "e.g. official=official_r18.onnx")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="intra-op threads for torch and onnxruntime (default: all cores)")
    p.add_argument("--out-dir", default="output/benchmark", help="where benchmark.{json,md,png} and the ONNX files go")
    return p.parse_args(argv)


def job_for(args):
    """The job module the flags ask for: --anydepth the depth sweep, --data the input pipeline, else the
    configs job (-c, --ablation, --compare). A job is a module with run(args, log) -> report."""
    if args.data:
        return data
    return anydepth if args.anydepth else configs


# What every job imports part-way (the export's checks, the onnxruntime timing, the plot): checked before
# any timing starts, so a missing one costs no minutes of measurement.
NEEDED = {"onnx": "onnx", "onnxruntime": "onnxruntime", "matplotlib": "matplotlib"}


def run(args, log=print):
    """Check the flags every job shares and the packages it needs, then run the job; writes the outputs,
    returns the report dict."""
    runner.check_flags(args)
    cli.check_outputs_apart([("--out-dir", os.path.join(args.out_dir, name))   # what it writes there
                             for name in ("benchmark.json", "benchmark.md", "benchmark.png", "onnx",
                                          "profile.json", "profile.md")], [
        *(item for config in args.config or () for item in config_files(config)),
        *(("--onnx", item.partition("=")[2] or item) for item in args.onnx)])
    cli.require(NEEDED, "benchmark.py")
    return job_for(args).run(args, log)


def work(argv=None):
    """The command line's work; main() runs it behind the error boundary (rtdetr_fine/cli.py)."""
    run(parse_args(argv))


def main(argv=None) -> int:
    """Exit code 0 on success; a user error is one line on stderr and exit code 1."""
    return cli.run_main(work, argv, prog="benchmark.py")


if __name__ == "__main__":
    sys.exit(main())
