"""Train RT-DETR (+FINE) with the RT-DETR recipe, or SSD300 (+CFSAM); evaluates on the val set after every epoch.

    python train.py -c configs/rtdetr_r18_fine.yml                      # one GPU (or CPU)
    torchrun --nproc_per_node 4 train.py -c configs/rtdetr_r18_fine.yml # DDP
    python train.py -c configs/demo/rtdetr_r18_fine_shapes.yml          # CPU demo on generated data
    python train.py -r output/run/last.pth                              # resume: in output/run, its config
    python train.py -c CONFIG -t rtdetr_r18vd_coco.pth -u num_classes=auto remap_mscoco_category=false \\
        train_dataloader.dataset.ann_file=... (and the other data paths)  # fine-tune on your own class set
    python train.py -c configs/rtdetr_r50_anydepth.yml -t rtdetr_r50vd_coco.pth --depth min  # any-depth

A run lives in output_dir (last.pth, best.pth, log.txt, config.yml, tensorboard/). best.pth is the epoch with
the best value of the config's evaluator.metric: COCO AP (log key val_AP, best_AP) or VOC mAP (VOC configs:
val_voc07_mAP and best_voc07_mAP, with val_voc07_per_class; the COCO numbers are logged too). A new run refuses an
output_dir that holds one (continue it with -r DIR/last.pth, replace it with --overwrite, or choose another
output_dir); temp files of a save that was killed are removed by the next run or resume there. Resuming a
run that has completed its `epochs` says "nothing to do" and exits with code 0 (raise epochs with -u to go on).
Resuming (-r DIR/last.pth) continues in DIR, the checkpoint's folder, whatever output_dir the config names,
unless -u output_dir=... gives one explicitly; the log says which folder and why. -c is optional with -r: the
checkpoint records its config (-u overrides apply on top); a -c config that builds another model than the
checkpoint's is refused, naming the keys.
Errors in the config, data, checkpoints or paths end as one line on stderr (rtdetr_fine/cli.py), exit code 1;
Ctrl-C says which checkpoint is the last complete one, exit code 130.
"""
import argparse
import json
import os
import random
import sys
import time

import numpy as np
import torch

import rtdetr_fine
from rtdetr_fine import cli
from rtdetr_fine import distributed as du
from rtdetr_fine.anydepth import convert_sync_batchnorm, describe_depth, layout_of, resolve_depths, using_depth
from rtdetr_fine.checkpoint import check_checkpoint_file, load_weights, remove_stale_temporaries
from rtdetr_fine.checkpoint import config_for_checkpoint, recorded_class_set
from rtdetr_fine.data.classes import apply_class_set
from rtdetr_fine.config import config_files, dump_config
from rtdetr_fine.config import RULES
from rtdetr_fine.engine import amp_dtype_for, evaluate, train_one_epoch
from rtdetr_fine.evaluation.flops import count_params
from rtdetr_fine.evaluation.metric import metric_key
from rtdetr_fine.data.loaders import (build_train_loader, build_val_loader, check_data_paths, describe_batch,
                                 prepare_demo_data, set_epoch)
from rtdetr_fine.engine.run_dir import check_run_dir, replace_previous_run, resume_folder
from rtdetr_fine.engine.run_dir import outside_run, resumes_in, save_epoch, set_aside_later_epochs
from rtdetr_fine.data.loaders import data_inputs
from rtdetr_fine.engine.optim import ModelEMA, build_optimizer, build_scheduler
from rtdetr_fine.engine.training_state import restore_training, training_state
from rtdetr_fine.nn.pretrained import local_file


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", help="YAML config (with -r, default: the config the checkpoint records)")
    p.add_argument("-r", "--resume", help="checkpoint to resume from (model, EMA, optimiser, schedule, epoch)")
    p.add_argument("-t", "--tuning", help="weights to fine-tune from (mismatched class heads are skipped)")
    p.add_argument("-u", "--update", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--seed", type=int, help="overrides the config's seed")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--amp", action="store_true", help="mixed precision on CUDA (amp.dtype: bfloat16 | float16)")
    p.add_argument("--test-only", action="store_true", help="only evaluate (-r/-t weights) on the val set")
    p.add_argument("--depth", metavar="SPEC", help="any-depth configs: the depth evaluated every epoch: full (default) | "
                   "min | 'backbone=1,0,1,1 neck=1 decoder=4' (1 = skip); training runs at full depth")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in output_dir (its last.pth, best.pth, TensorBoard events; log.txt is kept "
                        "as log.previous.txt) instead of refusing to start")
    return p.parse_args(argv)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def main(argv=None):
    args = parse_args(argv)
    if args.resume and args.tuning:
        raise cli.UserError("use either -r (resume) or -t (fine-tune), not both")
    if not args.config and not args.resume:
        raise cli.UserError("give the config with -c CONFIG (it may be left out only with -r, which resumes with "
                            "the config the checkpoint records)")
    if args.resume or args.tuning:
        check_checkpoint_file(args.resume or args.tuning)   # missing, empty, not a checkpoint: before any work
    if args.resume:   # the checkpoint's recorded config without -c; with -c, checked against it
        cfg, source = config_for_checkpoint(args.config, args.resume, args.update)
    else:
        cfg, source = rtdetr_fine.load_config(args.config, args.update), args.config
    if args.seed is not None:
        if RULES["seed"](args.seed):   # the config key's range (torch.manual_seed's), for the flag too
            raise cli.UserError(f"--seed {RULES['seed'](args.seed)}, got {args.seed}")
        cfg["seed"] = args.seed
    if args.depth and not cfg["anydepth"]["enabled"]:
        raise cli.UserError(f"--depth needs an any-depth config; config {source} has anydepth.enabled: false")
    if args.resume or args.tuning:
        cfg["backbone"]["pretrained"] = None   # the checkpoint has the backbone: no ImageNet download
    notes = [f"config: {source}"] if source != args.config else []
    if args.resume and not args.test_only:   # the run goes on in its own folder (engine/run_dir.py)
        cfg["output_dir"], why = resume_folder(args.resume, args.update, cfg["output_dir"])
        notes.append(f"output_dir {cfg['output_dir']}: {why}")
    if not args.test_only:   # before building anything: a run is never replaced silently
        try:
            check_run_dir(cfg["output_dir"], args.resume, args.overwrite)
        except OSError as e:   # e.g. a read-only folder the checkpoint was copied from
            raise type(e)(f"{e}" + (" (-r continues in the checkpoint's folder; -u output_dir=OTHER_DIR continues "
                                    "elsewhere)" if args.resume else "")) from None
        cli.check_outputs_apart([("output_dir", cfg["output_dir"])], [   # -r, -c of a run resumed in place are its own
            *outside_run(cfg["output_dir"], args.resume, [("-r", args.resume), *config_files(args.config)]),
            ("-t", args.tuning), ("backbone.pretrained", local_file(cfg["backbone"].get("pretrained"))),
            *data_inputs(cfg)])
    if not cfg["demo"]["enabled"]:   # before building anything: a missing COCO is the most common first error
        check_data_paths(cfg, ("val",) if args.test_only else ("train", "val"))

    device, rank, world = du.init_distributed(args.device)
    du.setup_logging(rank)
    for note in notes:
        du.log(note)
    try:
        run(args, cfg, device, rank, world)   # user errors: one line at the boundary (rtdetr_fine/cli.py)
    finally:
        du.cleanup()


def run(args, cfg, device, rank, world):
    prepare_demo_data(cfg)
    out_dir = cfg["output_dir"]
    amp_dtype = amp_dtype_for(args.amp, device, cfg["amp"]["dtype"])

    seed_everything(cfg["seed"] + rank)
    train_loader = None
    if args.test_only:   # the weights' own class set when the checkpoint records one
        path = args.resume or args.tuning
        classes = recorded_class_set(path, cfg["num_classes"]) if path else None
    else:                # the training file decides the class set (num_classes: auto counts its categories)
        train_loader = build_train_loader(cfg, cfg["seed"])
        du.log(describe_batch(cfg, world))
        classes = train_loader.dataset.classes
    val_loader, val_set, _ = build_val_loader(cfg, classes=classes)
    classes = val_set.classes
    apply_class_set(cfg, classes)
    du.log(classes.describe())
    model = rtdetr_fine.build_model(cfg)
    eval_depth = resolve_depths(model, [args.depth] if args.depth else None)[0]
    if args.tuning:
        load_weights(model, args.tuning, finetune=True, log=du.log)
    if cfg["sync_bn"] and world > 1:
        if device.type == "cpu":   # PyTorch's SyncBatchNorm runs on GPUs only
            du.log("sync_bn: not applied on CPU; BatchNorm statistics stay per process")
        else:
            model = convert_sync_batchnorm(model)   # torch's, keeping any-depth switchable norms switchable
    model.to(device)
    criterion = rtdetr_fine.build_criterion(cfg).to(device)
    postprocessor = rtdetr_fine.build_postprocessor(cfg)
    metric = cfg["evaluator"]["metric"]
    best_key = f"best_{metric_key(metric)}"   # best_AP (COCO, as ever) or e.g. best_voc07_mAP
    ema = ModelEMA(model, cfg["ema"]["decay"], cfg["ema"]["warmups"]) if cfg["ema"]["enabled"] else None
    du.log(f"model: {rtdetr_fine.describe_model(cfg)}, {count_params(model):,} parameters; device {device} x {world}")

    if args.test_only:
        if args.resume:
            load_weights(model, args.resume)
        with using_depth(model, eval_depth):
            result = evaluate(model, postprocessor, val_loader, val_set, device, amp_dtype=amp_dtype, metric=metric)
        du.log(json.dumps({f"val_{k}": v for k, v in {**result.stats, **metric_record(result.metric)}.items()}))
        return

    ddp_model, criterion = rtdetr_fine.build_training(cfg, model, criterion)   # any-depth: full + min, distilled
    if ddp_model is not model:
        du.log("any-depth training: full network on the ground truth + smallest network distilled from it")
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            ddp_model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg["find_unused_parameters"])
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, len(train_loader))
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    start_epoch, global_step, best_ap = 0, 0, -1.0
    cli.set_status(f"no checkpoint written yet in {out_dir}")
    if args.resume:
        start_epoch, global_step, best_ap = restore_training(args.resume, model, ema, optimizer, scheduler, scaler,
                                                             classes, best_key)
        if start_epoch >= cfg["epochs"]:   # documented: an explicit "nothing to do", exit code 0
            du.log(f"nothing to do: {args.resume} has completed {start_epoch} epochs and epochs={cfg['epochs']}; "
                   f"to train longer, resume with -u epochs=N (N > {start_epoch})")
            return
        du.log(f"resumed from {args.resume}: epoch {start_epoch}, iteration {global_step}")
        cli.set_status(f"last complete checkpoint: {args.resume} ({start_epoch} epochs)")

    writer = None
    if du.is_main():
        os.makedirs(out_dir, exist_ok=True)
        remove_stale_temporaries(out_dir, du.log)
        if args.overwrite and not resumes_in(out_dir, args.resume):   # in place: going back (engine/run_dir.py)
            replace_previous_run(out_dir, du.log)
        if args.resume:   # log.txt never holds an epoch twice
            set_aside_later_epochs(out_dir, start_epoch, args.resume, du.log)
        cli.write_text_atomic(os.path.join(out_dir, "config.yml"), dump_config(cfg))
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(os.path.join(out_dir, "tensorboard"))

    for epoch in range(start_epoch, cfg["epochs"]):
        # every epoch starts from a seed of its own, so a resumed run repeats an uninterrupted one
        seed_everything(cfg["seed"] + 1000 * epoch + rank)
        set_epoch(train_loader, epoch)
        t0 = time.time()
        train_stats, global_step = train_one_epoch(
            ddp_model, criterion, train_loader, optimizer, scheduler, device, epoch, ema=ema, scaler=scaler,
            amp_dtype=amp_dtype, clip_max_norm=cfg["optimizer"]["clip_max_norm"], global_step=global_step,
            writer=writer, log_every=cfg["log_every"])
        train_time = time.time() - t0
        eval_model = ema.module if ema is not None else model
        with using_depth(eval_model, eval_depth):   # the training model stays at full depth
            result = evaluate(eval_model, postprocessor, val_loader, val_set, device, amp_dtype=amp_dtype,
                              metric=metric)
        stats, eval_time = result.stats, result.seconds
        min_stats = evaluate_min_depth(eval_model, eval_depth, postprocessor, val_loader, val_set, device, amp_dtype)
        improved = result.metric.value > best_ap     # the config's metric: COCO AP or VOC mAP
        best_ap = max(best_ap, result.metric.value)

        if du.is_main():
            state = training_state(model, ema, optimizer, scheduler, scaler, epoch, global_step, best_ap, cfg,
                                     classes, best_key)
            record = {"epoch": epoch, "iteration": global_step, **{f"train_{k}": v for k, v in train_stats.items()},
                      "lr": optimizer.param_groups[0]["lr"], **{f"val_{k}": v for k, v in stats.items()},
                      **{f"val_{k}": v for k, v in metric_record(result.metric).items()},
                      "evaluated": "ema" if ema is not None else "model", best_key: best_ap,
                      **({"val_depth": describe_depth(eval_depth, layout_of(model))} if eval_depth else {}),
                      **{f"val_min_{k}": v for k, v in min_stats.items()},
                      "train_seconds": round(train_time, 1), "eval_seconds": round(eval_time, 1)}
            save_epoch(out_dir, state, record, improved)   # log line + last.pth (+ best.pth): together or not at all
            for k, v in {**stats, **metric_record(result.metric)}.items():
                if not isinstance(v, dict):
                    writer.add_scalar(f"val/{k}", v, epoch)
            for k, v in min_stats.items():
                writer.add_scalar(f"val_min/{k}", v, epoch)
            du.log(f"epoch {epoch}: loss {train_stats['loss']:.4f}  AP {stats['AP']:.4f}  AP50 {stats['AP50']:.4f}  "
                + (f"{result.metric.key} {result.metric.value:.4f}  " if metric != "coco" else "")
                + (f"min AP {min_stats['AP']:.4f}  " if min_stats else "") +
                f"(train {train_time:.0f}s, eval {eval_time:.0f}s)")
        du.barrier()
    if writer is not None:
        writer.close()


def metric_record(result) -> dict:
    """The config's metric for log.txt (as val_<key>): nothing beyond the COCO numbers for COCO; for a
    VOC metric its mAP and AP per class, e.g. {'voc07_mAP': 0.77, 'voc07_per_class': {'aeroplane': 0.81, ...}}."""
    if result.metric == "coco":
        return {}
    return {result.key: result.value, f"{result.metric}_per_class": result.per_class}


def evaluate_min_depth(eval_model, eval_depth, postprocessor, val_loader, val_set, device, amp_dtype) -> dict:
    """Any-depth models: the COCO numbers of the `min` depth too (best.pth still follows the main
    depth, `full` by default); {} for other models or when the main depth is `min`."""
    if eval_depth is None or eval_depth == layout_of(eval_model).min:
        return {}
    with using_depth(eval_model, "min"):
        return evaluate(eval_model, postprocessor, val_loader, val_set, device, amp_dtype=amp_dtype,
                        verbose=False).stats


if __name__ == "__main__":
    sys.exit(cli.run_main(main, prog="train.py"))
