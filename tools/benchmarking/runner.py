"""The run the model jobs share (configs.py, anydepth.py): build, count and export each row's model,
add the --onnx files, time PyTorch eager and onnxruntime in blocks (timing.py), then ratios, the
papers' figures and the outputs (report.py).

A model job calls run_models with its rows: (name, config, built deploy model or None, depth spec
or None), and the plot for benchmark.png.
"""
import os
import platform

import torch

from rtdetr_fine import cli
from rtdetr_fine.config import FAMILY_NAMES, family_of_key, load_config

from . import BenchmarkError
from .models import Candidate, OnnxFile, parse_onnx_args
from .papers import add_paper_figures
from .profile import profile_models, write_profile
from .report import add_ratios, publish, reference_indices
from .report import plot as bar_charts
from .timing import latency_stats, paired_ratio, time_in_blocks


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


def check_flags(args):
    """The flags every job shares: --input-size, --runs, --threads, --warmup, --block."""
    input_hw(args.input_size)
    if args.runs < 1 or args.threads < 1 or args.warmup < 0 or args.block < 1 or args.profile < 0:
        raise BenchmarkError("--runs, --threads and --block must be >= 1, --warmup and --profile >= 0")
    if args.profile and getattr(args, "data", False):
        raise BenchmarkError("--profile profiles ONNX graphs: it goes with -c, --ablation, --compare or --anydepth, "
                             "not --data")


def run_models(args, rows, log, plot=bar_charts):
    """Benchmark the models `rows()` builds, plus the --onnx files, and write the outputs.

    rows: called once the output folder is checked, -> [(name, config, deploy model or None to
    build the config's, depth spec or None)]. plot(report, path) draws benchmark.png.
    Returns the report dict.
    """
    size = input_hw(args.input_size)
    onnx_files = parse_onnx_args(args.onnx)
    cli.check_output_dir(args.out_dir, "--out-dir")   # before the models are built and timed
    torch.set_num_threads(args.threads)
    work_dir = os.path.join(args.out_dir, "onnx")
    os.makedirs(work_dir, exist_ok=True)
    load_before = _load_average(log)
    built = rows()
    check_overrides_used(args.update, [config for _, config, _, _ in built])   # before counting and exporting
    models = [_candidate(row, args, size, work_dir, log) for row in built]
    for name, path in onnx_files:
        log(f"[{name}] onnxruntime session for {path}")
        models.append(OnnxFile(name, path, *(size or models[0].result["input_size"]), args.threads))
    _time_runtimes(models, args, log)
    if args.profile:
        profile_models(models, args.profile, args.threads, log)
    report = {"settings": settings(args, size, load_before),
              "results": add_paper_figures(add_ratios([m.result for m in models]))}
    publish(report, args.out_dir, log, plot)
    if args.profile:
        log("wrote " + ", ".join(write_profile(report, args.out_dir)))
    return report


def _load_average(log):
    """The 1-minute load average, with a note when other processes may slow the timings."""
    load = os.getloadavg()[0]
    if load > 0.5:
        log(f"note: load average is {load:.2f}; other processes may slow the timings")
    return load


def family_overrides(config, overrides):
    """The -u items the detector family of `config` reads. --compare mixes RT-DETR and SSD300 configs: a key
    only one family reads (config.family_of_key, e.g. decoder.* or ssd.*) goes to that family's configs, as
    each family's config would refuse the other's."""
    family = load_config(config)["detector"]
    return [item for item in overrides if family_of_key(item.split("=", 1)[0].strip()) in (None, family)]


def check_overrides_used(overrides, configs):
    """Each -u item must reach at least one config: one that none of them reads would be dropped silently."""
    used = {item for config in configs for item in family_overrides(config, overrides)}
    unused = [item for item in overrides if item not in used]
    if unused:
        families = sorted({FAMILY_NAMES[load_config(config)["detector"]] for config in configs})
        raise BenchmarkError(f"-u {unused[0]!r}: no config timed here reads it (its key belongs to the other "
                             f"detector family; configs timed: {', '.join(families)})")


def _candidate(row, args, size, work_dir, log):
    """A row's Candidate, counted (memory, params, FLOPs) and exported to ONNX."""
    name, config, model, depth = row
    log(f"[{name}] build, count, export ({config}{', depth ' + depth if depth else ''})")
    candidate = Candidate(name, config, family_overrides(config, args.update), size, args.threads, work_dir, model)
    if depth:
        candidate.result["depth"] = depth
    candidate.count()
    candidate.export()
    return candidate


def _time_runtimes(models, args, log):
    """Time PyTorch eager (the exported configs; none with --no-eager) and onnxruntime (all models)."""
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


def settings(args, size, load_before):
    """The report's settings: what was run, on which machine and software, and the load meanwhile."""
    import onnxruntime
    return {
        "input_size": list(size) if size else None, "batch_size": 1, "threads": args.threads, "runs": args.runs,
        "anydepth": args.anydepth,
        "warmup": args.warmup, "block": args.block, "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "load_before": load_before, "load_after": os.getloadavg()[0],
        "latency": "median wall time of single-image inferences (model + post-processor), deploy mode",
        "memory_note": "peak RSS increase (VmHWM) over the first eager inference, and over ORT "
                       "session creation + first run",
    }
