"""Parameters and GFLOPs of SSD300 / RT-DETR with and without CFSAM: the CFSAM paper's Table 4 columns
(and RT-DETR R18 with FINE or the FINE paper's Table 2 baselines, docs/table2.md).

    python tools/cfsam_cost.py                          # the tables in docs/cfsam_ssd300.md, docs/table2.md
    python tools/cfsam_cost.py -c configs/ssd300.yml configs/ssd300_cfsam.yml

Each config is measured at its val_dataloader.image_size, in eval mode (no weights needed; random
init), with rtdetr_fine.evaluation.flops.count_flops: 2 x multiply-accumulates, attention included. The CFSAM
paper's "GFLOPs" are multiply-accumulates, so the G MAC column is the one to hold against it.
No timing here (see tools/benchmark.py for latency).
"""
import argparse
import os
import sys

import torch

import rtdetr_fine
from rtdetr_fine import cli
from rtdetr_fine.evaluation.flops import count_flops, count_params

CONFIGS = ("configs/ssd300.yml", "configs/ssd300_cfsam.yml", "configs/ssd300_coco.yml",
           "configs/ssd300_cfsam_coco.yml", "configs/rtdetr_r18.yml", "configs/rtdetr_r18_fine.yml",
           "configs/rtdetr_r18_cfsam.yml",
           # the FINE paper's Table 2 baselines in R18, as its authors ran them (docs/table2.md)
           "configs/ablation/rtdetr_r18_fapn.yml", "configs/ablation/rtdetr_r18_adafpn.yml",
           "configs/ablation/rtdetr_r18_mgc.yml")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_TABLE4 = {"configs/ssd300.yml": ("26.29M", "31.37"), "configs/ssd300_cfsam.yml": ("45.16M", "45.22")}


def measure(config: str) -> dict:
    """{config, size, params, gflops (2 x MAC)} of the config's model at its val image size."""
    cfg = rtdetr_fine.load_config(os.path.join(ROOT, config) if not os.path.isabs(config) else config,
                                  ["backbone.pretrained=null"])
    size = cfg["val_dataloader"]["image_size"]
    height, width = (size, size) if isinstance(size, int) else size
    torch.manual_seed(0)
    model = rtdetr_fine.build_model(cfg).eval()
    flops = count_flops(model, torch.zeros(1, 3, height, width))
    return {"config": config, "size": f"{height}x{width}", "params": count_params(model), "gflops": flops / 1e9}


def markdown(rows: list[dict]) -> str:
    lines = ["| config | input | params | GFLOPs (2 x MAC) | G MAC | paper Table 4: params, \"GFLOPs\" |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        paper = ", ".join(PAPER_TABLE4.get(r["config"], ("", ""))).strip(", ")
        lines.append(f"| `{r['config']}` | {r['size']} | {r['params']:,} | {r['gflops']:.2f} | "
                     f"{r['gflops'] / 2:.2f} | {paper} |")
    return "\n".join(lines)


def work(argv=None):
    """The command line's work; main() runs it behind the error boundary (rtdetr_fine/cli.py)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--configs", nargs="+", default=list(CONFIGS), help="configs to measure")
    args = p.parse_args(argv)
    rows = [measure(c) for c in args.configs]
    print(markdown(rows))
    return 0


def main(argv=None) -> int:
    """Exit code 0 on success; a user error is one line on stderr and exit code 1."""
    return cli.run_main(work, argv, prog="cfsam_cost.py")


if __name__ == "__main__":
    sys.exit(main())
