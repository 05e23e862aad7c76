"""Export RT-DETR (optionally with FINE) and its post-processor to ONNX.

The graph has the official RT-DETR deploy interface, so TensorRT / onnxruntime
scripts written for it work unchanged:

    inputs   images              float32 [N, 3, H, W], RGB in [0, 1]
             orig_target_sizes   int64   [N, 2], (width, height) of the original images
    outputs  labels              int64   [N, K]     contiguous class ids (0..num_classes-1)
             boxes               float32 [N, K, 4]  xyxy in original-image pixels
             scores              float32 [N, K]     sigmoid scores, sorted descending

with K = postprocessor.num_top_queries (300). The model is in deploy mode
(RepVGG blocks fused into single 3x3 convs). Opset 17, through the TorchScript
exporter (torch.onnx.export(..., dynamo=False)): the dynamo exporter cannot
go below opset 18 for this model.

The spatial size H x W is fixed at export (anchors and sampling grids are
constants for it); the batch is fixed (--batch-size) or dynamic (--dynamic).
The backbone's even-sized shortcut poolings are traced without ceil_mode (see
fixed_size()), a form onnxruntime runs faster on CPU. --check compares against
the model as trained.

    python export_onnx.py -c configs/rtdetr_r18_fine.yml -r ckpt.pth -o model.onnx --check
    python export_onnx.py -c configs/rtdetr_r18.yml -o r18.onnx --dynamic --simplify
"""
import argparse
import contextlib
import os
import sys
import warnings

import numpy as np
import torch
from torch import nn

import rtdetr_fine
from rtdetr_fine.checkpoint import load_weights

INPUT_NAMES = ["images", "orig_target_sizes"]
OUTPUT_NAMES = ["labels", "boxes", "scores"]
OPSET = 17


class ExportError(Exception):
    """A user-facing failure (bad config, missing checkpoint, ...): printed without a traceback."""


class DeployModel(nn.Module):
    """Model + post-processor in deploy mode: (images, orig_target_sizes) -> (labels, boxes, scores)."""

    def __init__(self, model, postprocessor):
        super().__init__()
        self.model = model.deploy()
        self.postprocessor = postprocessor.deploy()

    def forward(self, images, orig_target_sizes):
        return self.postprocessor(self.model(images), orig_target_sizes)


def build_deploy_model(config, checkpoint=None, overrides=(), log=print):
    """Config path (+ checkpoint) -> DeployModel in eval/deploy mode; errors become ExportError."""
    overrides = ["backbone.pretrained=null", *overrides]  # weights come from the checkpoint, never downloaded
    try:
        cfg = rtdetr_fine.load_config(config, overrides)
        model = rtdetr_fine.build_model(cfg)
    except (rtdetr_fine.ConfigError, ValueError, KeyError, TypeError) as e:
        raise ExportError(f"bad config: {e}") from None
    if checkpoint:
        try:
            which = load_weights(model, checkpoint)
        except (FileNotFoundError, ValueError) as e:
            raise ExportError(str(e)) from None
        log(f"loaded {which} weights from {checkpoint}")
    else:
        log("no checkpoint given: exporting randomly initialised weights")
    return DeployModel(model, rtdetr_fine.build_postprocessor(cfg)).eval()


def example_inputs(batch_size, height, width, seed=0):
    """Random images in [0, 1] and their (w, h) sizes, as the exported graph expects."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch_size, 3, height, width, generator=g)
    sizes = torch.tensor([[width, height]] * batch_size, dtype=torch.int64)
    return images, sizes


@contextlib.contextmanager
def fixed_size(model):
    """Trace-time forms for one fixed input size (a multiple of 32); the outputs do not change.

    The backbone's shortcut AvgPool2d(2, 2, ceil_mode=True) is traced with
    ceil_mode=False. Its inputs are at strides 4, 8 and 16 of an input that is a
    multiple of 32, so they have even sizes and ceil_mode changes nothing; but
    onnxruntime runs ceil_mode pooling outside its blocked conv layout.
    """
    ceil_pools = [m for name, m in model.named_modules()
                  if ".backbone." in f".{name}." and isinstance(m, nn.AvgPool2d) and m.ceil_mode]
    for m in ceil_pools:
        m.ceil_mode = False
    try:
        yield model
    finally:
        for m in ceil_pools:
            m.ceil_mode = True


def export(model, path, height=640, width=640, batch_size=1, dynamic=False):
    """Trace `model` (a DeployModel) to an opset-17 ONNX file at `path`."""
    images, sizes = example_inputs(batch_size, height, width)
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {name: {0: "N"} for name in INPUT_NAMES + OUTPUT_NAMES}
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad(), fixed_size(model):
        # tracer warnings about shape-derived Python values: the size is fixed by design
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (images, sizes), path, opset_version=OPSET, input_names=INPUT_NAMES,
                          output_names=OUTPUT_NAMES, dynamic_axes=dynamic_axes, do_constant_folding=True,
                          dynamo=False)
    return path


def op_types(path):
    """Sorted ONNX op types used in the graph at `path` (top-level graph)."""
    import onnx
    return sorted({node.op_type for node in onnx.load(path, load_external_data=False).graph.node})


def simplify(path):
    """Simplify the ONNX file in place with onnxslim or onnxsim; returns a message saying what ran."""
    import onnx
    try:
        import onnxslim
        onnx.save(onnxslim.slim(onnx.load(path)), path)
        return "simplified with onnxslim"
    except ImportError:
        pass
    try:
        import onnxsim
        model, ok = onnxsim.simplify(onnx.load(path))
        if not ok:
            return "onnxsim could not validate the simplified model; kept the original"
        onnx.save(model, path)
        return "simplified with onnxsim"
    except ImportError:
        return "--simplify: neither onnxslim nor onnxsim is installed (pip install onnxslim); left as exported"


def to_fp16(path):
    """Convert the weights and activations of the ONNX file to float16, keeping float32 inputs/outputs.

    Uses onnxconverter-common. Meant for GPU runtimes; for TensorRT an fp32 ONNX
    built with `--fp16` is the usual route. Returns a message.
    """
    import onnx
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise ExportError("--fp16 needs onnxconverter-common (pip install onnxconverter-common); "
                          "for TensorRT, export fp32 and build the engine with --fp16 instead") from None
    model = onnx.load(path)
    own_casts = {node.name for node in model.graph.node if node.op_type == "Cast"}
    model = float16.convert_float_to_float16(model, keep_io_types=True)
    for node in model.graph.node:  # the model's own casts to float32 must now produce float16
        if node.name in own_casts:
            for attr in node.attribute:
                if attr.name == "to" and attr.i == onnx.TensorProto.FLOAT:
                    attr.i = onnx.TensorProto.FLOAT16
    onnx.save(model, path)
    return "converted to float16 (inputs/outputs stay float32)"


def run_onnxruntime(path, images, sizes, threads=None):
    """Run the exported graph on CPU; returns (labels, boxes, scores) as numpy arrays."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return session.run(OUTPUT_NAMES, {"images": images.numpy(), "orig_target_sizes": sizes.numpy()})


def match_detections(reference, candidate, score_tol=1e-3, box_tol=0.5):
    """Fraction of `candidate` detections with a twin in `reference`, per image, averaged.

    Each argument is (labels [N, K], boxes [N, K, 4], scores [N, K]). A twin has the
    same label, |score difference| <= score_tol and every box coordinate within
    box_tol pixels. Order is not used: near-tied scores may swap ranks or cross the
    top-K boundary between runtimes.
    """
    ref_labels, ref_boxes, ref_scores = (np.asarray(a) for a in reference)
    labels, boxes, scores = (np.asarray(a) for a in candidate)
    matched = total = 0
    for i in range(labels.shape[0]):
        same_label = labels[i][:, None] == ref_labels[i][None, :]                       # [K, K_ref]
        close_score = np.abs(scores[i][:, None] - ref_scores[i][None, :]) <= score_tol
        close_box = (np.abs(boxes[i][:, None, :] - ref_boxes[i][None, :, :]) <= box_tol).all(-1)
        matched += int((same_label & close_score & close_box).any(1).sum())
        total += labels.shape[1]
    return matched / max(total, 1)


def check(path, model, height, width, batch_size, top_k=100, score_tol=1e-3, box_tol=0.5):
    """onnx.checker, then onnxruntime vs PyTorch on the same random input. Returns a summary dict."""
    import onnx
    onnx.checker.check_model(path, full_check=True)
    images, sizes = example_inputs(batch_size, height, width, seed=1)
    with torch.no_grad():
        expected = [t.numpy() for t in model(images, sizes)]
    got = run_onnxruntime(path, images, sizes)
    top = lambda outs: [o[:, :top_k] for o in outs]  # noqa: E731 - scores come sorted
    return {
        "top_k": top_k,
        "score_tol": score_tol,
        "box_tol": box_tol,
        "matched_fraction": match_detections(top(expected), top(got), score_tol, box_tol),
        "max_score_diff": float(np.abs(expected[2] - got[2]).max()),
        "op_types": op_types(path),
    }


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", required=True, help="YAML config, e.g. configs/rtdetr_r18_fine.yml")
    p.add_argument("-r", "--resume", dest="checkpoint", help="checkpoint (ema / model / bare state dict)")
    p.add_argument("-o", "--output", default="model.onnx", help="ONNX file to write (default model.onnx)")
    p.add_argument("-u", "--update", nargs="*", default=[], help="config overrides, dotted.key=value")
    p.add_argument("--input-size", type=int, nargs="+", default=[640], metavar="S",
                   help="S (square) or H W; multiples of 32 (default 640)")
    batch = p.add_mutually_exclusive_group()
    batch.add_argument("--batch-size", type=int, default=1, help="fixed batch size (default 1)")
    batch.add_argument("--dynamic", action="store_true", help="dynamic batch dimension N")
    p.add_argument("--check", action="store_true", help="onnx.checker + onnxruntime vs PyTorch agreement")
    p.add_argument("--simplify", action="store_true", help="simplify with onnxslim / onnxsim when installed")
    p.add_argument("--fp16", action="store_true",
                   help="float16 graph with float32 I/O (onnxconverter-common); for TensorRT prefer trtexec --fp16")
    return p.parse_args(argv)


def input_hw(sizes):
    """--input-size values -> (height, width), validated."""
    if len(sizes) not in (1, 2):
        raise ExportError(f"--input-size takes S or H W, got {sizes}")
    height, width = (sizes[0], sizes[0]) if len(sizes) == 1 else sizes
    if height <= 0 or width <= 0 or height % 32 or width % 32:
        raise ExportError(f"--input-size must be positive multiples of 32 (the coarsest stride), got {height}x{width}")
    return height, width


def run(args, log=print):
    """The CLI's work; raises ExportError for user errors."""
    height, width = input_hw(args.input_size)
    if args.batch_size < 1:
        raise ExportError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not os.path.isfile(args.config):
        raise ExportError(f"config file not found: {args.config}")
    model = build_deploy_model(args.config, args.checkpoint, args.update, log=log)
    batch_size = 1 if args.dynamic else args.batch_size
    try:
        export(model, args.output, height, width, batch_size, args.dynamic)
    except ValueError as e:  # the model rejects the input size (e.g. fewer tokens than queries)
        raise ExportError(f"cannot export at {height}x{width}: {e}") from None
    log(f"exported {args.output}: opset {OPSET}, input {'N' if args.dynamic else batch_size}x3x{height}x{width}")
    if args.simplify:
        log(simplify(args.output))
    if args.fp16:
        log(to_fp16(args.output))
    if args.check:
        tolerances = dict(score_tol=1e-2, box_tol=2.0) if args.fp16 else {}  # fp16 vs the fp32 PyTorch model
        report = check(args.output, model, height, width, 2 if args.dynamic else batch_size, **tolerances)
        log(f"onnx.checker: ok; onnxruntime vs PyTorch: {100 * report['matched_fraction']:.1f}% of the "
            f"top-{report['top_k']} detections agree (same label, score +-{report['score_tol']:g}, "
            f"box +-{report['box_tol']:g} px); "
            f"max |score diff| over all {report['max_score_diff']:.2e}")
        log(f"ONNX op types ({len(report['op_types'])}): {', '.join(report['op_types'])}")
        return report
    return None


def main(argv=None):
    args = parse_args(argv)
    try:
        run(args)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
