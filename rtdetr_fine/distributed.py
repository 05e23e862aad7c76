"""torch.distributed helpers: one process per device under torchrun; NCCL on CUDA, gloo on CPU.

A fault ends a distributed run, it does not hang it: torchrun stops the other processes (SIGTERM) when
one fails, and each then ends as Ctrl-C does (its temporary files removed, the last complete
checkpoint named); a collective that waits for a process that is gone fails after RTDETR_DIST_TIMEOUT
seconds (environment; default torch's own, 30 min for gloo, 10 min for NCCL).
"""
import datetime
import os
import signal

import torch
import torch.distributed as dist


def resolve_device(device_arg: str = "auto") -> torch.device:
    """--device auto | cpu | cuda | cuda:N -> torch.device; ValueError for a device this machine lacks."""
    if device_arg == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device_arg)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {device_arg!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device_arg}: CUDA is not available on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device_arg}: this machine has {torch.cuda.device_count()} GPU(s), "
                             f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    elif device.type != "cpu":
        raise ValueError(f"--device {device_arg!r}: expected auto, cpu, cuda or cuda:N")
    return device


def init_distributed(device_arg="auto"):
    """Start the process group when launched by torchrun; pick this process's device.

    Returns (device, rank, world_size). Without torchrun: rank 0 of 1, no process group.
    A device this machine lacks is a ValueError naming it.
    """
    use_cuda = resolve_device(device_arg).type == "cuda"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if use_cuda:
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        else:
            device = torch.device("cpu")
        dist.init_process_group(backend="nccl" if use_cuda else "gloo",
                                device_id=device if use_cuda else None, **process_group_timeout())
        signal.signal(signal.SIGTERM, _stop_on_sigterm)   # torchrun's stop when another process failed
        return device, dist.get_rank(), dist.get_world_size()
    return resolve_device(device_arg), 0, 1


def process_group_timeout() -> dict:
    """{'timeout': timedelta} from RTDETR_DIST_TIMEOUT (seconds), or {} for torch's default."""
    value = os.environ.get("RTDETR_DIST_TIMEOUT")
    if not value:
        return {}
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"RTDETR_DIST_TIMEOUT={value!r}: expected a number of seconds > 0")
    return {"timeout": datetime.timedelta(seconds=seconds)}


class Stopped(KeyboardInterrupt):
    """SIGTERM (torchrun stopping this process because another one failed): unwinds like Ctrl-C, so
    saves in progress remove their temporary files and the command names the last complete checkpoint."""


def _stop_on_sigterm(signum, frame):
    raise Stopped(f"signal {signum}")


def is_dist():
    return dist.is_available() and dist.is_initialized()


def rank():
    return dist.get_rank() if is_dist() else 0


def world_size():
    return dist.get_world_size() if is_dist() else 1


def is_main():
    return rank() == 0


def barrier():
    if is_dist():
        dist.barrier()


def all_gather_objects(obj):
    """List of `obj` from every rank (just [obj] without a process group)."""
    if not is_dist():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def mean_over_ranks(values, device):
    """{name: float} averaged over ranks (for logging)."""
    if not is_dist() or not values:
        return dict(values)
    names = sorted(values)
    t = torch.tensor([float(values[n]) for n in names], device=device, dtype=torch.float64)
    dist.all_reduce(t)
    return {n: v / world_size() for n, v in zip(names, t.tolist())}


def cleanup():
    if is_dist():
        dist.destroy_process_group()


def log(*args):
    """print on rank 0 only."""
    if is_main():
        print(*args, flush=True)


def setup_logging(rank_):
    """INFO on rank 0, warnings elsewhere; faster-coco-eval's own summary is printed by us."""
    import logging
    logging.basicConfig(level=logging.INFO if rank_ == 0 else logging.WARNING, format="%(message)s")
    logging.getLogger("faster_coco_eval").setLevel(logging.WARNING)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model inside DistributedDataParallel (or the model itself), and inside a training
    wrapper that holds it as `detector` (distill.FullAndMin): what checkpoints and the EMA see."""
    model = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    return getattr(model, "detector", model)
