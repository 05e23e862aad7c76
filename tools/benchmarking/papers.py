"""The papers' figures next to ours: the FINE paper's Table 3 (Jetson Orin Nano, TensorRT) for the
RT-DETR rows, the CFSAM paper's Table 4 (VOC, GPU) for the SSD300 rows. A row gets them when its
name is one of PAPER_FIGURES' (the rows of --compare, configs.COMPARE); report.py shows them as
the table's paper columns and the plot's last panel.
"""

FINE_TABLE_3 = "FINE paper, Table 3 (RT-DETR R18, 640 px, TensorRT 10.7 on a Jetson Orin Nano)"
CFSAM_TABLE_4 = "CFSAM paper, Table 4 (SSD300 on VOC, 300 px, GPU: RTX 3090)"
# The papers' figures for the --compare rows, as printed: the FINE rows give "+" figures on top of
# R18 (added here; the +1.6M parameters are one cell for all three modes), memory is TensorRT's in MB.
# The CFSAM paper gives FPS (latency here = 1000 / FPS) and "GFLOPs" that are multiply-accumulates
# (torchvision's SSD300 has its 26.29M parameters and exactly 31.37 G MAC: README, "CFSAM and SSD300"),
# so they are compared by their ratio only. R18 + CFSAM is our combination: no paper figures.
PAPER_FIGURES = {
    "R18": {"source": FINE_TABLE_3, "params_m": 20.2, "gflops": 61.74, "flops_unit": "2 x MAC",
            "latency_ms": 14.22, "fps": 71, "memory_mb": 63.03},
    "R18 + FINE quadratic": {"source": FINE_TABLE_3, "params_m": 20.2 + 1.6, "gflops": 61.74 + 22.2,
                             "flops_unit": "2 x MAC", "latency_ms": 27.81, "fps": 36, "memory_mb": 63.03 + 280.92},
    "R18 + FINE linear": {"source": FINE_TABLE_3, "params_m": 20.2 + 1.6, "gflops": 61.74 + 11.4,
                          "flops_unit": "2 x MAC", "latency_ms": 18.69, "fps": 55, "memory_mb": 63.03 + 5.86},
    "R18 + FINE linear+bottleneck": {"source": FINE_TABLE_3, "params_m": 20.2 + 1.6, "gflops": 61.74 + 1.3,
                                     "flops_unit": "2 x MAC", "latency_ms": 15.07, "fps": 68,
                                     "memory_mb": 63.03 + 3.12},
    "SSD300": {"source": CFSAM_TABLE_4, "params_m": 26.29, "gflops": 31.37, "flops_unit": "MAC",
               "latency_ms": 1000 / 38, "fps": 38, "memory_mb": None},
    "SSD300 + CFSAM": {"source": CFSAM_TABLE_4, "params_m": 45.16, "gflops": 45.22, "flops_unit": "MAC",
                       "latency_ms": 1000 / 57, "fps": 57, "memory_mb": None},
}
PAPER_RATIO_KEYS = ("params_m", "gflops", "latency_ms", "memory_mb")
PAPER_COLUMNS = " paper: params (M) | paper: GFLOPs | paper: latency (ms) | paper: memory (MB) |"


def add_paper_figures(results):
    """`paper`: PAPER_FIGURES of the rows named there, with their ratios to the figures of the row's
    reference, ratios["reference"] (report.add_ratios runs first): the same reference as ours, as
    both families have their baseline in the papers."""
    for r in results:
        figures = PAPER_FIGURES.get(r["name"])
        if figures is None:
            continue
        reference = PAPER_FIGURES.get(r["ratios"]["reference"], {})
        r["paper"] = dict(figures, ratios={k: figures[k] / reference[k] for k in PAPER_RATIO_KEYS
                                           if figures.get(k) and reference.get(k)})
    return results


def has_paper_figures(results):
    """Whether any row has paper figures (then the table and plot get the paper columns)."""
    return any("paper" in r for r in results)


def paper_note(results):
    """The table's note on the paper columns: where the figures come from and how they compare."""
    return ("Paper columns: " + "; ".join(sorted({r["paper"]["source"] for r in results if "paper" in r}))
            + ". Their ratios are against the same baseline row as ours; the CFSAM paper's \"GFLOPs\" are "
              "multiply-accumulates and its latency is 1000 / FPS; the papers' memory is TensorRT's, not "
              "a process's peak RSS; R18 + CFSAM is not in either paper.")


def paper_cells(r):
    """The paper columns of a row: params, GFLOPs, latency and memory, each with its ratio."""
    paper = r.get("paper")
    if paper is None:
        return ["–"] * 4
    cells = []
    for key, spec, unit in (("params_m", ".2f", ""), ("gflops", ".2f", f" ({paper['flops_unit']})"),
                            ("latency_ms", ".2f", f" ({paper['fps']} FPS)"), ("memory_mb", ".2f", "")):
        if paper.get(key) is None:
            cells.append("–")
            continue
        ratio = paper["ratios"].get(key)
        cells.append(f"{paper[key]:{spec}}{unit}" + ("" if ratio is None or r["name"] == r["ratios"]["reference"]
                                                     else f" (x{ratio:.3f})"))
    return cells

