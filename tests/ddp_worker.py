"""Run by tests/test_train.py under `torchrun --nproc_per_node 2`: a few DDP training steps of a
small RT-DETR + FINE on CPU (gloo), where rank 1's images have no boxes in one step; then every
rank writes a checksum of its parameters so the test can compare them. With a second argument
"anydepth" (tests/test_distill.py): the any-depth model trained by self-distillation (full + min)."""
import json
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import rtdetr_fine  # noqa: E402
from rtdetr_fine import distributed as du  # noqa: E402
from rtdetr_fine.engine import train_one_epoch  # noqa: E402
from rtdetr_fine.engine.optim import ModelEMA, build_optimizer, build_scheduler  # noqa: E402


def batches(rank, steps=3, size=96):
    """Step 1 on rank 1: two images without boxes; elsewhere ordinary boxes."""
    g = torch.Generator().manual_seed(100 + rank)
    out = []
    for step in range(steps):
        targets = []
        for _ in range(2):
            n = 0 if (rank == 1 and step == 1) else 2
            cxcy = 0.3 + 0.4 * torch.rand(n, 2, generator=g)
            wh = 0.1 + 0.2 * torch.rand(n, 2, generator=g)
            targets.append({"labels": torch.randint(0, 3, (n,), generator=g), "boxes": torch.cat([cxcy, wh], 1)})
        out.append((torch.rand(2, 3, size, size, generator=g), targets))
    return out


def main(out_dir, variant=""):
    device, rank, world = du.init_distributed("cpu")
    torch.set_num_threads(1)
    name = "rtdetr_r18_fine_anydepth.yml" if variant == "anydepth" else "rtdetr_r18_fine.yml"
    cfg = rtdetr_fine.load_config(os.path.join(ROOT, "configs", name), [
        "backbone.pretrained=null", "num_classes=3", "decoder.num_queries=20", "decoder.num_denoising=10",
        "postprocessor.num_top_queries=20"])
    torch.manual_seed(0)                      # identical initial weights on every rank
    model = rtdetr_fine.build_model(cfg)
    module, criterion = rtdetr_fine.build_training(cfg, model, rtdetr_fine.build_criterion(cfg))
    ddp = torch.nn.parallel.DistributedDataParallel(module, find_unused_parameters=cfg["find_unused_parameters"])
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, 3)
    ema = ModelEMA(model, 0.99, 10)
    stats, step = train_one_epoch(ddp, criterion, batches(rank), optimizer, scheduler, device, 0, ema=ema,
                                  clip_max_norm=0.1)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"rank": rank, "world": world, "steps": step, "loss": stats["loss"],
                   "distilled": module is not model, "loss_kd_bbox": stats.get("loss_kd_bbox"),
                   "sum": flat.double().sum().item(), "abs_sum": flat.double().abs().sum().item(),
                   "first": flat[:5].tolist()}, f)
    torch.save(flat, os.path.join(out_dir, f"rank{rank}.pt"))
    du.cleanup()


if __name__ == "__main__":
    main(*sys.argv[1:])
