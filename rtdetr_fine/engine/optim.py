"""Optimiser, learning-rate schedule and EMA of the RT-DETR recipe."""
import copy
import math
import time

import regex
import torch
from torch import nn

from ..config import ConfigError
from ..distributed import unwrap


def param_groups(model: nn.Module, groups: list, lr: float, weight_decay: float) -> list:
    """Optimiser groups as the official RT-DETR builds them from its YAML: each group's regex is
    matched (re.search, bounded in time: _bounded_matches) on the trainable parameters' names; a group without lr / weight_decay
    gets the defaults; the names no group matches form the last group.

    A name matched by two groups is a ConfigError (the official code asserts on it too).
    """
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    owner = {}
    out = []
    for i, group in enumerate(groups):
        members = []
        matches = _bounded_matches(group["params"], [name for name, _ in named], f"optimizer.params[{i}].params")
        for (name, p), matched in zip(named, matches):
            if matched:
                if name in owner:
                    raise ConfigError(f"optimizer.params: parameter '{name}' matches both group {owner[name]} "
                                      f"({groups[owner[name]]['params']!r}) and group {i} ({group['params']!r})")
                owner[name] = i
                members.append(p)
        out.append({"params": members, "lr": group.get("lr", lr),
                    "weight_decay": group.get("weight_decay", weight_decay)})
    rest = [p for name, p in named if name not in owner]
    out.append({"params": rest, "lr": lr, "weight_decay": weight_decay})
    return [g for g in out if g["params"]]


# Matching one group's regex against every parameter name (a few hundred names of < 100 characters)
# takes microseconds; a pattern that backtracks exponentially ((a|aa)+$, (a+)+b) would take years.
# `re` cannot be stopped, so the patterns run on the `regex` module (re's syntax: V0) with a deadline.
PARAM_REGEX_SECONDS = 2.0


def _bounded_matches(pattern: str, names: list, key: str) -> list:
    """[regex.search(pattern, name) is not None for name in names], within PARAM_REGEX_SECONDS in all;
    a slower pattern is a ConfigError naming `key`."""
    compiled = regex.compile(pattern, flags=regex.V0)
    deadline = time.monotonic() + PARAM_REGEX_SECONDS
    found = []
    for name in names:
        try:
            found.append(compiled.search(name, timeout=max(deadline - time.monotonic(), 1e-3)) is not None)
        except TimeoutError:
            raise ConfigError(f"{key} {pattern!r} did not finish matching the parameter names within "
                              f"{PARAM_REGEX_SECONDS:g} s (catastrophic backtracking: nested or overlapping repeats "
                              "such as (a+)+ or (a|aa)+); write it without repeating a repeat") from None
    return found


def build_optimizer(model: nn.Module, cfg: dict) -> torch.optim.Optimizer:
    o = cfg["optimizer"]
    groups = param_groups(model, o["params"], o["lr"], o["weight_decay"])
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
