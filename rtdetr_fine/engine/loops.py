"""One training epoch and one evaluation pass (used by train.py and eval.py)."""
import math
import time
from typing import NamedTuple

import torch
from tqdm import tqdm

from .. import distributed as du
from ..cli import NonFiniteLossError
from ..evaluation.inference import gather_detections, predict
from ..evaluation.metric import MetricResult, score_detections


def amp_dtype_for(enabled, device, dtype_name):
    """torch dtype for autocast, or None: mixed precision is used on CUDA only."""
    if not enabled:
        return None
    if device.type != "cuda":
        du.log(f"--amp: mixed precision is used on CUDA only; running in float32 on {device}")
        return None
    return getattr(torch, dtype_name)


def targets_to(targets, device):
    return [{k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]


def train_one_epoch(model: torch.nn.Module, criterion: torch.nn.Module, loader, optimizer: torch.optim.Optimizer,
                    scheduler, device: torch.device, epoch: int, ema=None, scaler=None, amp_dtype=None,
                    clip_max_norm: float = 0.0, global_step: int = 0, writer=None,
                    log_every: int = 20) -> tuple[dict, int]:
    """Returns ({mean loss terms}, global_step after the epoch). Stops on a non-finite loss.

    Every `log_every` steps, every loss term the criterion returns goes to TensorBoard (`writer`)."""
    model.train()
    criterion.train()
    sums, count = {}, 0
    bar = tqdm(loader, desc=f"epoch {epoch}", disable=not du.is_main(), dynamic_ncols=True)
    for images, targets in bar:
        images = images.to(device, non_blocking=True)
        targets = targets_to(targets, device)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs = model(images, targets)
        outputs = _to_float32(outputs) if amp_dtype is not None else outputs
        losses = criterion(outputs, targets)
        loss = sum(losses.values())
        values = dict(zip(losses, torch.stack([v.detach() for v in losses.values()]).tolist()))  # one sync
        values["loss"] = sum(values.values())
        check_finite(values, epoch, global_step, device)

        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if clip_max_norm > 0:
            torch.nn.utils.clip_grad_norm_(du.unwrap(model).parameters(), clip_max_norm)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update(model)

        global_step += 1
        count += 1
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v
        bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        if writer is not None and global_step % log_every == 0:
            for k, v in values.items():
                writer.add_scalar(f"train/{k}", v, global_step)
            writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], global_step)
    means = {k: v / max(count, 1) for k, v in sums.items()}
    return du.mean_over_ranks(means, device), global_step


def check_finite(values, epoch, step, device):
    """Stop instead of training on NaN/inf. Under DDP all ranks agree first, so every rank
    stops at the same iteration instead of the others waiting in the gradient all-reduce."""
    local_ok = math.isfinite(values["loss"])
    all_ok = local_ok
    if du.is_dist():
        flag = torch.tensor([1.0 if local_ok else 0.0], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        all_ok = bool(flag.item())
    if all_ok:
        return
    if local_ok:
        raise NonFiniteLossError(f"non-finite loss on another rank at epoch {epoch}, iteration {step}")
    bad = {k: v for k, v in values.items() if k != "loss" and not math.isfinite(v)}
    shown = ", ".join(f"{k}={v}" for k, v in sorted(bad.items())[:12])
    raise NonFiniteLossError(
        f"non-finite loss {values['loss']} at epoch {epoch}, iteration {step} (rank {du.rank()}): {shown}. "
        "Lower the learning rate, check the data (boxes) or disable AMP.")


def _to_float32(outputs):
    if torch.is_tensor(outputs):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, dict):
        return {k: _to_float32(v) if k != "dn_meta" else v for k, v in outputs.items()}
    if isinstance(outputs, list):
        return [_to_float32(v) for v in outputs]
    return outputs


class Evaluation(NamedTuple):
    stats: dict            # the 12 COCO numbers by name (evaluation.COCO_STAT_NAMES)
    detections: list       # all ranks' detections, COCO results format
    cocoeval: object       # the COCOeval object (None when there were no detections)
    seconds: float
    metric: MetricResult   # the metric asked for (evaluator.metric): its headline value and AP per class


def evaluate(model: torch.nn.Module, postprocessor: torch.nn.Module, loader, coco_dataset, device: torch.device,
             img_ids=None, amp_dtype=None, backend: str = "faster", progress: bool = True,
             verbose: bool = True, metric: str = "coco") -> Evaluation:
    """COCO bbox metrics of `model` over `loader`, and `metric` (coco | voc07 | voc, with AP per class;
    rtdetr_fine/evaluation/metric.py). All ranks predict; every rank gets the numbers.

    coco_dataset: the CocoDetection behind the loader (ground truth, label -> category ids);
    img_ids: the images the loader covers when it is a subset (e.g. --max-images).
    """
    start = time.time()
    detections, _ = predict(du.unwrap(model), postprocessor, loader, device, coco_dataset.label2category, amp_dtype,
                            progress=progress)
    detections = gather_detections(detections)
    stats, cocoeval, result = score_detections(coco_dataset.coco.dataset, detections, metric, img_ids, backend,
                                               verbose=verbose)
    return Evaluation(stats, detections, cocoeval, time.time() - start, result)
