"""Evaluate a checkpoint on the val set of a config: COCO bbox metrics, the FINE paper's Fig. 4 analyses
and the config's metric (COCO AP or VOC mAP) with AP per class; or score a saved detections file.

    python eval.py -r output/rtdetr_r18_fine/best.pth                  # the config the checkpoint records
    python eval.py -c configs/rtdetr_r18_fine.yml -r output/rtdetr_r18_fine/best.pth --plots plots/
    python eval.py -c configs/rtdetr_r18.yml -r rtdetr_r18vd_dec3_6x_coco_from_paddle.pth \\
        --output-json r18.json --save-detections r18_dets.json
    python eval.py -c configs/ssd300_cfsam.yml -r output/ssd300_cfsam_voc/best.pth     # VOC07 mAP, AP per class
    python eval.py -c configs/ssd300_cfsam.yml --detections dets.json --metric voc     # re-score, no model run
    torchrun --nproc_per_node 4 eval.py -c CONFIG -r CKPT            # DDP: predictions gathered, scored once
    python eval.py -c configs/demo/rtdetr_r18_fine_shapes.yml -r output/demo_shapes/last.pth --max-images 10
    python eval.py -c configs/rtdetr_r50_anydepth.yml -r CKPT --depth full min "backbone=1,0,1,1 neck=1 decoder=4"

Config: -c CONFIG, or without it the config a train.py checkpoint records (-u overrides apply on top,
e.g. -u val_dataloader.dataset.img_folder=... val_dataloader.dataset.ann_file=... to evaluate on other
data). A -c config that builds another model than the checkpoint records is refused, naming the keys.
Weights: the EMA weights when the checkpoint has them ({'ema': {'module': ...}}), else {'model': ...},
else a bare state dict; official RT-DETR checkpoints load as they are. The header says which were used.
Detections carry the val file's category ids, mapped from the model's labels with the class set the
checkpoint records (train.py writes it), else with the val file's categories (rtdetr_fine/data/classes.py).
Reports the 12 COCO numbers, false positives per image at score >= 0.5 (Fig. 4 left) and AP by object
size (Fig. 4 right); see rtdetr_fine/evaluation/analysis.py for the exact definitions. Then the metric
(--metric, default the config's evaluator.metric): coco, or voc07 / voc (the VOC devkit's 11-point /
all-point AP, rtdetr_fine/evaluation/voc_eval.py), with AP per class as a table and in the JSON
(`per_class`; VOC metrics add `mAP`). Any-depth configs: one such report per --depth (params run and
GFLOPs at that depth, then the tables).
--detections FILE scores a COCO results file (what --save-detections writes) against the config's val
annotation file (-u val_dataloader.dataset.ann_file=... to change it) without building a model (-c needed).
--plots DIR writes PNGs: precision-recall curves (all classes at IoU 0.5 and 0.75; the --plot-classes
classes with the lowest AP), AP per class, AP by object size, false positives per image against the
score threshold (rtdetr_fine/evaluation/plots.py); several --depth: a subfolder per depth.
--output-json / --save-detections are checked before the evaluation starts; a failed write of one
file does not keep the others from being written. Errors (config, data,
checkpoint, paths) end as one line on stderr with exit code 1 (rtdetr_fine/cli.py).
"""
import argparse
import json
import os
import sys

import torch

import rtdetr_fine
from rtdetr_fine import cli
from rtdetr_fine import distributed as du
from rtdetr_fine.anydepth import (count_depth_params, depth_spec, depth_tag, describe_depth,
                                  layout_of, resolve_depths, using_depth)
from rtdetr_fine.evaluation.analysis import ap_by_size, count_false_positives, format_ap_by_size, format_false_positives
from rtdetr_fine.evaluation.analysis import false_positive_curve
from rtdetr_fine.checkpoint import CheckpointMismatchError, check_checkpoint_file, load_weights
from rtdetr_fine.checkpoint import check_config_fits, config_for_checkpoint, recorded_class_set
from rtdetr_fine.config import EVAL_METRICS, config_files
from rtdetr_fine.data.classes import apply_class_set
from rtdetr_fine.data.coco import read_coco_json
from rtdetr_fine.engine import amp_dtype_for, evaluate
from rtdetr_fine.evaluation import format_coco_table
from rtdetr_fine.evaluation.coco_eval import read_coco_results
from rtdetr_fine.evaluation.flops import count_flops, count_params
from rtdetr_fine.evaluation.metric import format_per_class, precision_recall_curves, score_detections
from rtdetr_fine.data.loaders import DataPathError, build_val_loader, check_data_paths, prepare_demo_data
from rtdetr_fine.data.loaders import data_inputs

SUMMARY_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl"]   # the one-line summary; the JSON has all 12


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", help="YAML config (its val_dataloader is evaluated); default: the config "
                                         "the checkpoint records (train.py's checkpoints do)")
    p.add_argument("-r", "--resume", metavar="CKPT", help="checkpoint to evaluate (or --detections)")
    p.add_argument("--detections", metavar="FILE",
                   help="score this COCO results file (e.g. from --save-detections) instead of running a model")
    p.add_argument("--metric", choices=EVAL_METRICS,
                   help="coco | voc07 | voc (the VOC devkit's 11-point / all-point AP); default: evaluator.metric")
    p.add_argument("-u", "--update", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--output-json", metavar="FILE", help="write the metrics and analyses here")
    p.add_argument("--save-detections", metavar="FILE", help="write all detections in the COCO results format")
    p.add_argument("--plots", metavar="DIR", help="write PNGs here: precision-recall curves, AP per class, AP by "
                                                  "object size, false positives per image")
    p.add_argument("--plot-classes", type=int, default=6, metavar="K",
                   help="--plots: precision-recall curves of the K classes with the lowest AP (default 6)")
    p.add_argument("--max-images", type=int, metavar="N", help="evaluate the first N val images only")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--backend", default="faster", choices=["faster", "pycocotools"],
                   help="COCO evaluator: faster-coco-eval (default) or pycocotools")
    p.add_argument("--amp", action="store_true", help="mixed precision on CUDA (amp.dtype: bfloat16 | float16)")
    p.add_argument("--fp-score", type=float, default=0.5, help="score threshold of the false-positive count")
    p.add_argument("--fp-iou", type=float, default=0.5, help="IoU threshold of the false-positive count")
    p.add_argument("--depth", nargs="+", metavar="SPEC",
                   help="any-depth configs: depths to evaluate, each reported: full (default) | min | "
                        "'backbone=1,0,1,1 neck=1 decoder=4' (1 = skip). With several, --save-detections FILE "
                        "writes FILE_<depth tag>.json per depth and the JSON report lists all under 'by_depth'")
    return p.parse_args(argv)


def main(argv=None):
    """Returns the report dict (on every rank; only rank 0 prints and writes files)."""
    args = parse_args(argv)
    check_arguments(args)
    if args.detections:
        cfg = rtdetr_fine.load_config(args.config, args.update)
        args.metric = args.metric or cfg["evaluator"]["metric"]
        check_outputs_apart(args, cfg)
        du.setup_logging(0)
        return score_saved_detections(args, cfg)
    if args.config:   # -c: its data paths are checked first, then the checkpoint against it
        cfg, args.config_source = rtdetr_fine.load_config(args.config, args.update), args.config
    else:             # the config the checkpoint records (-u on top)
        cfg, args.config_source = config_for_checkpoint(None, args.resume, args.update)
    args.metric = args.metric or cfg["evaluator"]["metric"]
    check_outputs_apart(args, cfg)
    cfg["backbone"]["pretrained"] = None   # every weight comes from the checkpoint: no ImageNet download
    if not cfg["demo"]["enabled"]:   # before building anything, as train.py does
        check_data_paths(cfg, ("val",))
    check_checkpoint_file(args.resume)   # missing, empty, not a checkpoint: before any work
    if args.config:   # a -c config that builds another model than the checkpoint's: the keys named
        check_config_fits(cfg, args.config, args.resume, args.update)
    if args.depth and not cfg["anydepth"]["enabled"]:
        raise cli.UserError(f"--depth needs an any-depth config; config {args.config_source} has "
                            "anydepth.enabled: false")

    device, rank, _ = du.init_distributed(args.device)
    du.setup_logging(rank)
    try:
        return run(args, cfg, device)
    finally:
        du.cleanup()


def check_arguments(args):
    """Argument ranges and output paths, before any work (a bad path must not cost an evaluation)."""
    if bool(args.resume) == bool(args.detections):
        raise cli.UserError("give either -r CKPT (run a model) or --detections FILE (score saved detections)"
                            + (", not both" if args.resume else ""))
    if args.detections:
        for flag, value in (("--save-detections", args.save_detections), ("--depth", args.depth)):
            if value:
                raise cli.UserError(f"{flag} needs a model run (-r); --detections scores a saved file")
        if not args.config:
            raise cli.UserError("--detections scores against the val annotation file of a config: give -c CONFIG")
    if args.plot_classes < 1:
        raise cli.UserError(f"--plot-classes must be at least 1, got {args.plot_classes}")
    if args.plots:
        cli.check_output_dir(args.plots, "--plots")
        cli.require({"matplotlib": "matplotlib"}, "--plots")
    if args.max_images is not None and args.max_images < 1:
        raise cli.UserError(f"--max-images must be at least 1, got {args.max_images}")
    for flag, value in (("--fp-score", args.fp_score), ("--fp-iou", args.fp_iou)):
        if not 0.0 <= value <= 1.0:
            raise cli.UserError(f"{flag} must be in [0, 1], got {value}")
    outputs = [(flag, path) for flag, path in (("--output-json", args.output_json),
                                               ("--save-detections", args.save_detections)) if path]
    for flag, path in outputs:
        cli.check_output_file(path, flag)
    if len(outputs) == 2 and os.path.abspath(outputs[0][1]) == os.path.abspath(outputs[1][1]):
        raise cli.UserError(f"--output-json and --save-detections are the same file ({args.output_json}); "
                            "give two names")


def check_outputs_apart(args, cfg):
    """The output guard (rtdetr_fine/cli.py): no output is, holds or lies inside an input, before any work."""
    cli.check_outputs_apart(
        [("--output-json", args.output_json), ("--save-detections", args.save_detections), ("--plots", args.plots)],
        [*config_files(args.config), ("-r", args.resume), ("--detections", args.detections),
         *data_inputs(cfg, ("val",))])


def run(args, cfg, device):
    prepare_demo_data(cfg)
    # labels -> the val file's category ids: with the class set the checkpoint was trained with when it
    # records one, else with the val file's own categories (official checkpoints: COCO's, via remap)
    loader, val_set, img_ids = build_val_loader(cfg, args.max_images, classes=checkpoint_class_set(args, cfg))
    apply_class_set(cfg, val_set.classes)
    model = rtdetr_fine.build_model(cfg)
    depths = resolve_depths(model, args.depth)   # a bad --depth is a DepthSpecError (ValueError): one line
    weights = load_checkpoint_or_exit(model, args.resume, args.config_source, cfg["num_classes"])
    model.to(device).eval()
    postprocessor = rtdetr_fine.build_postprocessor(cfg)
    amp_dtype = amp_dtype_for(args.amp, device, cfg["amp"]["dtype"])

    height, width = val_image_size(cfg)
    num_images = len(img_ids) if img_ids is not None else len(val_set)
    cli.set_status("nothing written")
    failed = []   # outputs that could not be written: reported after the others are
    reports = {}
    for depth in depths:
        with using_depth(model, depth):
            report = evaluate_at_depth(args, model, depth, weights, postprocessor, loader, val_set, img_ids, device,
                                       amp_dtype, (height, width), num_images, len(depths) > 1, failed)
        reports[report.get("depth")] = report
    report = next(iter(reports.values()))
    if len(reports) > 1:
        report = {**report, "by_depth": reports}
    if du.is_main() and args.output_json:
        write_output(args.output_json, report, "report", failed)
    du.barrier()
    if failed:
        raise OSError("could not write " + "; ".join(failed))
    return report


def evaluate_at_depth(args, model, depth, weights, postprocessor, loader, val_set, img_ids, device, amp_dtype, size,
                      num_images, several, failed):
    """Header (params and GFLOPs of what runs), COCO tables and the report of `model` at its current depth
    (depth None: a model that is not any-depth)."""
    layout = layout_of(model) if depth is not None else None
    params = count_depth_params(model) if depth is not None else count_params(model)
    gflops = val_gflops(model, *size, device) if du.is_main() else None
    described = describe_depth(depth, layout) if depth is not None else None
    du.log(format_header(args, weights, params, gflops, size, device, amp_dtype, num_images, val_set.ann_file,
                         described))
    detections_path, plots_dir = args.save_detections, args.plots
    if several:   # one file per depth: FILE_<tag>.json, and a folder of plots per depth: DIR/<tag>/
        if detections_path:
            stem, ext = os.path.splitext(detections_path)
            detections_path = f"{stem}_{depth_tag(depth, layout)}{ext or '.json'}"
        if plots_dir:
            plots_dir = os.path.join(plots_dir, depth_tag(depth, layout))
    report = evaluate_and_report(args, model, postprocessor, loader, val_set, img_ids, device, amp_dtype,
                                 detections_path, plots_dir, failed)
    report.update({"weights": weights, "params": params, "gflops": gflops, "image_size": list(size),
                   "images": num_images})
    if depth is not None:
        report.update({"depth": depth_tag(depth, layout), "depth_spec": depth_spec(depth),
                       "params_total": count_params(model)})
    return report


def evaluate_and_report(args, model, postprocessor, loader, val_set, img_ids, device, amp_dtype, detections_path,
                        plots_dir, failed):
    """COCO numbers, false positives, AP by size and the metric of `model` as it is; prints the tables, and
    draws them into plots_dir (when given). A detections file or plot that cannot be written is added to
    `failed` (the report is still written)."""
    result = evaluate(model, postprocessor, loader, val_set, device, img_ids=img_ids, amp_dtype=amp_dtype,
                      backend=args.backend, verbose=False, metric=args.metric)
    report = scores_report(args, val_set.coco.dataset, result.detections, img_ids, result.stats, result.cocoeval,
                           result.metric)
    if du.is_main() and plots_dir:
        write_plots(args, plots_dir, val_set.coco.dataset, result.detections, img_ids, result.cocoeval,
                    result.metric, report, failed)
    report.update({"checkpoint": args.resume, "device": str(device), "world_size": du.world_size(),
                   "eval_seconds": round(result.seconds, 2)})
    if du.is_main() and detections_path:
        write_output(detections_path, result.detections, f"detections ({len(result.detections)}, COCO results "
                     "format)", failed)
    return report


def scores_report(args, gt, detections, img_ids, stats, cocoeval, metric):
    """The report of scored detections (the same for a model run and --detections): the COCO numbers,
    the Fig. 4 analyses and the metric with AP per class; prints their tables."""
    false_positives = count_false_positives(gt, detections, img_ids, args.fp_score, args.fp_iou)
    sizes = ap_by_size(cocoeval, gt, img_ids)
    du.log(format_coco_table(stats))
    du.log(format_summary(stats))
    du.log(format_false_positives(false_positives))
    du.log(format_ap_by_size(sizes))
    du.log(format_per_class(metric))
    return {**stats, "config": args.config, "overrides": list(args.update), "backend": args.backend,
            "detections": len(detections), "false_positives": false_positives, "ap_by_size": sizes,
            "metric": metric.metric, **({"mAP": metric.value} if metric.metric != "coco" else {}),
            "per_class": metric.per_class, "objects_per_class": metric.objects}


def score_saved_detections(args, cfg):
    """eval.py --detections FILE: the report of a saved COCO results file against the config's val
    annotation file, without a model (no checkpoint, no images read)."""
    prepare_demo_data(cfg)   # demo configs: the generated val file the detections refer to
    ann_file = cfg["val_dataloader"]["dataset"]["ann_file"]
    if not os.path.isfile(ann_file):
        raise DataPathError(f"val_dataloader.dataset.ann_file: {ann_file} (not found); --detections scores against "
                            "the config's val annotation file (set it with -u val_dataloader.dataset.ann_file=...)")
    gt = read_coco_json(ann_file)
    detections = read_coco_results(args.detections, gt, ann_file)
    image_ids = sorted(im["id"] for im in gt["images"])
    if not image_ids:
        raise ValueError(f"{ann_file}: the val set has no images ('images' is empty): nothing to evaluate")
    img_ids = image_ids[:args.max_images] if args.max_images is not None else None
    num_images = len(img_ids) if img_ids is not None else len(image_ids)
    du.log("\n".join([
        f"config      {args.config}" + (f"  (overrides: {' '.join(args.update)})" if args.update else ""),
        f"detections  {args.detections} ({len(detections)}, COCO results format; no model run)",
        f"images      {num_images} ({ann_file})" + max_images_note(args.max_images, num_images),
        f"metric      {args.metric}",
        f"backend     {args.backend}",
    ]))
    cli.set_status("nothing written")
    stats, cocoeval, metric = score_detections(gt, detections, args.metric, img_ids, args.backend, verbose=False)
    report = scores_report(args, gt, detections, img_ids, stats, cocoeval, metric)
    report.update({"detections_file": args.detections, "ann_file": ann_file, "images": num_images})
    failed = []
    if args.plots:
        write_plots(args, args.plots, gt, detections, img_ids, cocoeval, metric, report, failed)
    if args.output_json:
        write_output(args.output_json, report, "report", failed)
    if failed:
        raise OSError("could not write " + "; ".join(failed))
    return report


def write_plots(args, folder, gt, detections, img_ids, cocoeval, metric, report, failed):
    """--plots: the pictures of rtdetr_fine/evaluation/plots.py in `folder`, from the scores of `report` and
    the curves behind them; a failed write is added to `failed`."""
    from rtdetr_fine.evaluation.plots import write_evaluation_plots
    curves = precision_recall_curves(gt, detections, args.metric, cocoeval, img_ids)
    fp_curve = false_positive_curve(gt, detections, img_ids, iou_threshold=args.fp_iou)
    try:
        written = write_evaluation_plots(folder, curves, metric, report["ap_by_size"], fp_curve,
                                         report["false_positives"], args.plot_classes)
        du.log(f"plots ({', '.join(os.path.basename(p) for p in written)}) -> {folder}")
    except OSError as e:
        failed.append(f"{folder}: {e.strerror or e}")


def checkpoint_class_set(args, cfg):
    return recorded_class_set(args.resume, cfg["num_classes"])


def load_checkpoint_or_exit(model, path, config_path, num_classes):
    """load_weights (EMA first) -> 'ema' | 'model' | 'state_dict'. A checkpoint that does not fit the
    model is a ValueError saying why: another architecture (what the checkpoint looks like next to what
    the config builds), or, when only the class heads differ, another num_classes."""
    try:
        return load_weights(model, path, prefer_ema=True, log=du.log)
    except CheckpointMismatchError as e:
        trained = e.checkpoint_classes
        if e.only_class_heads and trained is not None and trained != num_classes:
            raise cli.UserError(
                f"checkpoint {path} was trained for {trained} classes, but config {config_path} has "
                f"num_classes={num_classes}, so its class heads do not fit the model (e.g. "
                f"decoder.enc_score_head.weight is [{trained}, hidden_dim] in the checkpoint). Evaluate it with "
                f"the config it was trained with, or add -u num_classes={trained}.") from None
        raise ValueError(f"cannot evaluate with config {config_path}: {e}") from None


def val_image_size(cfg):
    """(height, width) the val images are resized to."""
    size = cfg["val_dataloader"]["image_size"]
    return (size, size) if isinstance(size, int) else tuple(size)


def val_gflops(model, height, width, device):
    """GFLOPs (2 x MAC, see rtdetr_fine/evaluation/flops.py) of one forward pass on a [1, 3, height, width] image."""
    return count_flops(model, torch.zeros(1, 3, height, width, device=device)) / 1e9


def format_header(args, weights, params, gflops, size, device, amp_dtype, num_images, ann_file, depth=None):
    flops = f"{gflops:.2f} GFLOPs" if gflops is not None else "GFLOPs n/a"
    precision = "float32" if amp_dtype is None else f"amp {str(amp_dtype).replace('torch.', '')}"
    return "\n".join([
        f"config      {args.config_source}" + (f"  (overrides: {' '.join(args.update)})" if args.update else ""),
        f"checkpoint  {args.resume}",
        f"weights     {weights}",
        *([f"depth       {depth}"] if depth else []),
        f"model       {params:,} parameters{' run' if depth else ''}, {flops} at {size[0]}x{size[1]} "
        "(one image, 2 x MAC)",
        f"device      {device} x {du.world_size()}, {precision}",
        f"images      {num_images} ({ann_file})" + max_images_note(args.max_images, num_images),
        f"metric      {args.metric}",
        f"backend     {args.backend}",
    ])


def format_summary(stats):
    return "  ".join(f"{k} {stats[k]:.4f}" for k in SUMMARY_NAMES)


def max_images_note(max_images, used):
    if max_images is None:
        return ""
    if max_images > used:
        return f"; --max-images {max_images}: the set has only {used}, all used"
    return f", the first {used} only (--max-images)"


def write_output(path, obj, what, failed):
    """Write `obj` as JSON to `path`; an OSError is added to `failed`, so one bad path does not keep the
    other outputs from being written (main raises the collected errors at the end)."""
    try:
        write_json(path, obj)
        du.log(f"{what} -> {path}")
    except OSError as e:
        failed.append(f"{path}: {e.strerror or e}")


def write_json(path, obj):
    cli.prepare_output_file(path)
    cli.write_text_atomic(path, json.dumps(obj))


if __name__ == "__main__":
    sys.exit(cli.run_main(main, prog="eval.py"))
