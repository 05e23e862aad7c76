"""What a model job times: a config's deploy model with its ONNX export and onnxruntime session
(Candidate), or an ONNX file exported elsewhere with the same interface (OnnxFile, --onnx).

Both run batch 1, model + post-processor (what export_onnx.py, rtdetr_fine/deploy.py, exports), and
fill `result`: the row of benchmark.json, which the runner completes with latencies and ratios.
"""
import os

import torch

from rtdetr_fine import deploy
from rtdetr_fine.anydepth import count_depth_params, is_anydepth
from rtdetr_fine.config import image_hw, load_config
from rtdetr_fine.evaluation.flops import count_flops, count_params

from . import ROOT, BenchmarkError
from .timing import PeakMemory


def safe_name(name):
    """A row name as a file name ('R18 + FINE linear' -> 'R18_+_FINE_linear')."""
    return "".join(c if c.isalnum() or c in "+-_." else "_" for c in name)


def resolve_config(path):
    """A config path as given, else relative to the repo root when that is where it is."""
    if not os.path.isfile(path) and os.path.isfile(os.path.join(ROOT, path)):
        return os.path.join(ROOT, path)
    return path


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
        """One inference in PyTorch eager."""
        with torch.inference_mode():
            self.model(self.images, self.sizes)

    def run_ort(self):
        """One inference in onnxruntime."""
        self.session.run(None, {"images": self.images.numpy(), "orig_target_sizes": self.sizes.numpy()})


class OnnxFile:
    """An ONNX file exported elsewhere (e.g. by the official RT-DETR), timed in onnxruntime only."""

    def __init__(self, name, path, height, width, threads):
        """Loads the file into an onnxruntime session and runs it once (memory), checking its interface."""
        self.name = name
        self.images, self.sizes = deploy.example_inputs(1, height, width)
        with PeakMemory() as mem:
            self._open(f"--onnx {name}={path}", path, threads)
        self.result = {"name": name, "config": None, "family": None, "input_size": [height, width],
                       "onnx": os.path.abspath(path), "params": None,
                       "gflops": None, "eager_ms": None, "eager_min_ms": None, "eager_peak_mib": None,
                       "eager_contended": False, "ort_peak_mib": mem.mib}

    def _open(self, where, path, threads):
        """The session and its first run; a file that cannot load or run, or has other inputs, is a
        BenchmarkError that starts with `where`."""
        try:
            self.session = deploy.onnxruntime_session(path, threads)
        except Exception as e:  # onnxruntime raises its own exception types
            raise BenchmarkError(f"{where}: onnxruntime cannot load it: {e}") from None
        inputs = {i.name for i in self.session.get_inputs()}
        if inputs != {"images", "orig_target_sizes"}:
            raise BenchmarkError(f"{where}: inputs are {sorted(inputs)}, expected "
                                 f"images and orig_target_sizes (the RT-DETR deploy interface)")
        try:
            self.run_ort()
        except Exception as e:
            height, width = self.images.shape[-2:]
            raise BenchmarkError(f"{where}: does not run on a 1x3x{height}x{width} input: {e}") from None

    run_ort = Candidate.run_ort

