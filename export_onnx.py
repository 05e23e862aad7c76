"""Export RT-DETR (optionally with FINE) and its post-processor to ONNX (opset 17).

    python export_onnx.py -c configs/rtdetr_r18_fine.yml -r ckpt.pth -o model.onnx --check
    python export_onnx.py -r output/run/last.pth -o model.onnx --check     # the config the checkpoint records
    python export_onnx.py -c configs/rtdetr_r18.yml -o r18.onnx --dynamic --simplify
    python export_onnx.py -c configs/rtdetr_r50_anydepth.yml -r ckpt.pth -o r50.onnx --depth full min --check

The graph has the official RT-DETR deploy interface (inputs `images` [N,3,H,W] float in
[0, 1] and `orig_target_sizes` [N,2] int64 (w, h); outputs `labels`, `boxes` (xyxy
pixels), `scores`), so TensorRT / onnxruntime scripts written for it work unchanged.
The model is in deploy mode (RepVGG blocks fused). The spatial size H x W is fixed
at export (anchors and sampling grids are constants for it); the batch is fixed
(--batch-size) or dynamic (--dynamic). The TorchScript exporter is used
(torch.onnx.export(..., dynamo=False)): the dynamo exporter cannot go below opset 18
for this model. --check compares onnxruntime against the model as trained.
Any-depth configs: one graph per --depth, holding only the layers that depth runs
(several depths: OUTPUT_<depth tag>.onnx each).
Without -c the config a train.py checkpoint (-r) records is used (-u overrides apply on top); a -c
config that builds another model than the checkpoint records is refused, naming the keys.
The work is done by rtdetr_fine/deploy.py; this file is the command line.
"""
import argparse
import os
import sys

from rtdetr_fine import cli, deploy
from rtdetr_fine.config import config_files
from rtdetr_fine.anydepth import depth_tag, describe_depth, layout_of, resolve_depths, using_depth


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", help="YAML config, e.g. configs/rtdetr_r18_fine.yml; default: the config "
                                         "the checkpoint records (train.py's checkpoints do)")
    p.add_argument("-r", "--resume", dest="checkpoint", help="checkpoint (ema / model / bare state dict)")
    p.add_argument("-o", "--output", default="model.onnx", help="ONNX file to write (default model.onnx)")
    p.add_argument("-u", "--update", nargs="*", default=[], help="config overrides, dotted.key=value")
    p.add_argument("--input-size", type=int, nargs="+", metavar="S",
                   help="S (square) or H W (default: the config's val_dataloader.image_size); RT-DETR: multiples of 32")
    batch = p.add_mutually_exclusive_group()
    batch.add_argument("--batch-size", type=int, default=1, help="fixed batch size (default 1)")
    batch.add_argument("--dynamic", action="store_true", help="dynamic batch dimension N")
    p.add_argument("--check", action="store_true", help="onnx.checker + onnxruntime vs PyTorch agreement")
    p.add_argument("--simplify", action="store_true", help="simplify with onnxslim / onnxsim when installed")
    p.add_argument("--fp16", action="store_true",
                   help="float16 graph with float32 I/O (onnxconverter-common); for TensorRT prefer trtexec --fp16")
    p.add_argument("--depth", nargs="+", metavar="SPEC",
                   help="any-depth configs: the depth(s) to export: full (default) | min | "
                        "'backbone=1,0,1,1 neck=1 decoder=4' (1 = skip); several: OUTPUT_<tag>.onnx each")
    return p.parse_args(argv)


def input_hw(sizes, divisor=32):
    """--input-size values (or the config's image size, an int) -> (height, width), validated."""
    sizes = [sizes] if isinstance(sizes, int) else list(sizes)
    if len(sizes) not in (1, 2):
        raise ValueError(f"--input-size takes S or H W, got {sizes}")
    height, width = (sizes[0], sizes[0]) if len(sizes) == 1 else sizes
    try:
        deploy.check_input_size(height, width, divisor)
    except ValueError as e:
        raise ValueError(f"--input-size: {e}") from None
    return height, width


def run(args, log=print):
    """The CLI's work: argument and path checks first, then build, export, and optionally check."""
    if args.input_size is not None:
        input_hw(args.input_size, divisor=1)      # shape errors before building; stride checked below
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not args.config and not args.checkpoint:
        raise cli.UserError("give -c CONFIG (random weights), -r CKPT (a train.py checkpoint: its recorded config "
                            "is used) or both")
    needed = {"onnx": "onnx", **({"onnxruntime": "onnxruntime"} if args.check else {}),
              **({"onnxconverter_common": "onnxconverter-common"} if args.fp16 else {})}
    cli.require(needed, "export_onnx.py" + (" --check" if args.check else "") + (" --fp16" if args.fp16 else ""))
    deploy.prepare_output_path(args.output)   # a bad -o fails now, not after building and tracing
    inputs = [*config_files(args.config), ("-r", args.checkpoint)]
    cli.check_outputs_apart([("-o", args.output)], inputs)
    model = deploy.build_deploy_model(args.config, args.checkpoint, args.update, log=log)
    height, width = input_hw(args.input_size or model.image_size, deploy.size_divisibility(model.model))
    outputs = output_paths(args.output, resolve_depths(model.model, args.depth), model.model)
    for _, path in outputs:                   # every file this run writes, before the first is written
        deploy.prepare_output_path(path)
    cli.check_outputs_apart([("-o", path) for _, path in outputs], inputs)
    reports = {}
    for depth, path in outputs:
        with using_depth(model.model, depth):
            if depth is not None:
                log(f"depth {describe_depth(depth, layout_of(model.model))}")
            reports[path] = export_one(args, model, path, height, width, log)
    return next(iter(reports.values())) if len(reports) == 1 else reports


def output_paths(output, depths, model):
    """[(depth, file)]: -o itself for one depth; FILE_<depth tag>.onnx for each of several (--depth all)."""
    if len(depths) == 1:
        return [(depths[0], output)]
    stem, ext = os.path.splitext(output)
    return [(depth, f"{stem}_{depth_tag(depth, layout_of(model))}{ext or '.onnx'}") for depth in depths]


def export_one(args, model, path, height, width, log):
    """Export `model` as it is to `path`, then the optional simplify / fp16 / check steps."""
    batch_size = 1 if args.dynamic else args.batch_size
    try:
        deploy.export(model, path, height, width, batch_size, args.dynamic)
    except ValueError as e:  # the model rejects the input size (e.g. fewer tokens than queries)
        raise ValueError(f"cannot export at {height}x{width}: {e}") from None
    log(f"exported {path}: opset {deploy.OPSET}, input "
        f"{'N' if args.dynamic else batch_size}x3x{height}x{width}, {deploy.node_count(path)} nodes")
    if args.simplify:
        log(deploy.simplify(path))
    if args.fp16:
        log(deploy.to_fp16(path))
    if args.check:
        tolerances = dict(score_tol=1e-2, box_tol=2.0) if args.fp16 else {}  # fp16 vs the fp32 PyTorch model
        report = deploy.check(path, model, height, width, 2 if args.dynamic else batch_size, **tolerances)
        log(f"onnx.checker: ok; onnxruntime vs PyTorch: {100 * report['matched_fraction']:.1f}% of the "
            f"top-{report['top_k']} detections agree (same label, score +-{report['score_tol']:g}, "
            f"box +-{report['box_tol']:g} px); "
            f"max |score diff| over all {report['max_score_diff']:.2e}")
        log(f"ONNX op types ({len(report['op_types'])}): {', '.join(report['op_types'])}")
        return report
    return None


def main(argv=None):
    run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli.run_main(main, prog="export_onnx.py"))
