"""Optimiser, learning-rate schedule and EMA of the RT-DETR recipe."""
import copy
import math

import torch
from torch import nn


def param_groups(model, lr, backbone_lr, weight_decay):
    """AdamW groups: the backbone at backbone_lr; no weight decay on norms and biases (1-D tensors)."""
    groups = {(b, d): [] for b in (True, False) for d in (True, False)}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        in_backbone = name.startswith("backbone.") or ".backbone." in name
        groups[(in_backbone, p.ndim > 1)].append(p)
    return [{"params": ps, "lr": backbone_lr if b else lr, "weight_decay": weight_decay if d else 0.0}
            for (b, d), ps in groups.items() if ps]


def build_optimizer(model, cfg):
    o = cfg["optimizer"]
    groups = param_groups(model, o["lr"], o["backbone_lr"], o["weight_decay"])
    if o["type"] == "SGD":        # the SSD / CFSAM recipe
        return torch.optim.SGD(groups, lr=o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"])
    return torch.optim.AdamW(groups, lr=o["lr"], betas=tuple(o["betas"]), weight_decay=o["weight_decay"])


def build_scheduler(optimizer, cfg, iters_per_epoch):
    """Per-iteration LambdaLR: linear warmup over warmup_iters, times lr_gamma per passed milestone epoch."""
    o = cfg["optimizer"]
    warmup, milestones, gamma = o["warmup_iters"], sorted(o["lr_milestones"]), o["lr_gamma"]

    def factor(it):
        epoch = it // max(iters_per_epoch, 1)
        decay = gamma ** sum(epoch >= m for m in milestones)
        return decay * (min(1.0, (it + 1) / warmup) if warmup > 0 else 1.0)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class ModelEMA:
    """Exponential moving average of weights and buffers, decay ramped up as
    decay * (1 - exp(-updates / warmups)) so early averages follow the model (as RT-DETR's EMA).

    state_dict() is {'module': averaged state dict, 'updates': n}: the official checkpoint layout.
    """

    def __init__(self, model, decay=0.9999, warmups=2000):
        self.module = copy.deepcopy(unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.warmups, self.updates = decay, warmups, 0

    def current_decay(self):
        return self.decay * (1 - math.exp(-self.updates / self.warmups)) if self.warmups > 0 else self.decay

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = self.current_decay()
        source = unwrap(model).state_dict()
        for k, v in self.module.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(source[k].detach(), alpha=1 - d)
            else:
                v.copy_(source[k])

    def state_dict(self):
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state):
        self.module.load_state_dict(state["module"])
        self.updates = state["updates"]


def unwrap(model):
    """The plain model inside DistributedDataParallel (or the model itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
