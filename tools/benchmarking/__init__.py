"""The pieces of tools/benchmark.py: the machinery every job shares, and one module per job.

    timing.py    turn-based timing in blocks, quiet-run latency statistics, paired ratios, peak memory
    models.py    what is timed: a config's deploy model with its ONNX session, or an ONNX file (--onnx)
    runner.py    the run the model jobs share: build, count, export, time both runtimes, report
    report.py    ratios to each family's reference; benchmark.json / .md / .png
    papers.py    the papers' figures (FINE Table 3, CFSAM Table 4) next to ours
    profile.py   --profile: onnxruntime's profiler, node time per module and op type (profile.json / .md)
    configs.py   job: named configs (--ablation, --compare, -c CONFIGS)
    anydepth.py  job: one any-depth model at each of its benchmark depths (--anydepth -c CONFIG)
    data.py      job: the training input pipeline, ours against the official one's (--data)

A job is a module with `run(args, log) -> report dict`; tools/benchmark.py picks one from the flags
(job_for). A new job is a module here plus its flag there: a job that times models hands
runner.run_models the rows to build; any other job builds on timing.py and report.py.
"""
import os

from rtdetr_fine import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class BenchmarkError(cli.UserError):
    """A user-facing failure (bad argument, config or ONNX file): printed without a traceback."""
