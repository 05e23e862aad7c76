"""Job: named configs, each built, exported and timed in PyTorch eager and onnxruntime.

--ablation: the baseline R18 and its three FINE modes (the FINE paper's Table 3).
--compare: both detector families in one run, RT-DETR R18, + FINE (each attention mode), + the FINE
paper's Table 2 baselines (FaPN, AdaFPN, MGC), + CFSAM, and SSD300, SSD300 + CFSAM (the VOC configs,
as the CFSAM paper's table); their rows carry the papers' figures (papers.py). -c CONFIGS: the given
configs, each named after its file.
"""
import os

from . import ROOT
from .models import resolve_config
from .runner import run_models

ABLATION = (
    ("baseline", "configs/rtdetr_r18.yml"),
    ("quadratic", "configs/ablation/rtdetr_r18_fine_quadratic.yml"),
    ("linear", "configs/ablation/rtdetr_r18_fine_linear.yml"),
    ("linear_bottleneck", "configs/ablation/rtdetr_r18_fine_linear_bottleneck.yml"),
)
# --compare: one run over both detector families; each row's ratios are against its family's first row.
COMPARE = (
    ("R18", "configs/rtdetr_r18.yml"),
    ("R18 + FINE quadratic", "configs/ablation/rtdetr_r18_fine_quadratic.yml"),
    ("R18 + FINE linear", "configs/ablation/rtdetr_r18_fine_linear.yml"),
    ("R18 + FINE linear+bottleneck", "configs/ablation/rtdetr_r18_fine_linear_bottleneck.yml"),
    ("R18 + FaPN", "configs/ablation/rtdetr_r18_fapn.yml"),        # the FINE paper's Table 2 baselines,
    ("R18 + AdaFPN", "configs/ablation/rtdetr_r18_adafpn.yml"),    # as its authors ran them (docs/table2.md)
    ("R18 + MGC", "configs/ablation/rtdetr_r18_mgc.yml"),
    ("R18 + CFSAM", "configs/rtdetr_r18_cfsam.yml"),
    ("SSD300", "configs/ssd300.yml"),
    ("SSD300 + CFSAM", "configs/ssd300_cfsam.yml"),
)


def named_configs(args):
    """[(name, config path)] to benchmark; config paths are resolved against the repo root too."""
    if args.ablation or args.compare:
        return [(name, os.path.join(ROOT, path)) for name, path in (ABLATION if args.ablation else COMPARE)]
    out, seen = [], set()
    for path in map(resolve_config, args.config):
        name = os.path.splitext(os.path.basename(path))[0]
        while name in seen:
            name += "_"
        seen.add(name)
        out.append((name, path))
    return out


def run(args, log):
    """Time the configs the flags name (each built at its own or the --input-size); returns the report."""
    return run_models(args, lambda: [(name, config, None, None) for name, config in named_configs(args)], log)
