"""What a benchmark run writes: ratios of each row to its family's reference row, and
benchmark.json (settings + rows), benchmark.md (the table, with the papers' columns where a row has
figures: papers.py) and benchmark.png (bar charts, or a job's own plot) in --out-dir.
"""
import json
import os

from .papers import PAPER_COLUMNS, has_paper_figures, paper_cells, paper_note

RATIO_KEYS = ("params", "gflops", "eager_ms", "ort_ms")
TABLE_COLUMNS = ("| model | input | params (M) | GFLOPs | PyTorch eager (ms) | onnxruntime (ms) | eager peak +MiB "
                 "| ORT peak +MiB |")


# ----------------------------------------------------------------------------- ratios

def reference_indices(results):
    """Index of each result's reference: the first result of its detector family (`family`: rtdetr,
    ssd300); results without one (--onnx files) are compared with the first result."""
    first = {}
    for i, r in enumerate(results):
        if r.get("family"):
            first.setdefault(r["family"], i)
    return [first.get(r.get("family"), 0) for r in results]


def add_ratios(results):
    """ratios[k] = value / its reference's value (reference_indices), for params, GFLOPs and latencies."""
    for r, i in zip(results, reference_indices(results)):
        reference = results[i]
        r["ratios"] = {k: r[k] / reference[k] for k in RATIO_KEYS if r.get(k) and reference.get(k)}
        r["ratios"]["reference"] = reference["name"]
    return results


# ----------------------------------------------------------------------------- Markdown

def _fmt(value, spec):
    """A number in the given format, or n/a."""
    return "n/a" if value is None else format(value, spec)


def _cell(r, key, spec, scale=1.0):
    """'value (xratio, paired xratio)' for the Markdown table; * marks a contended latency; n/a if not measured."""
    if r.get(key) is None:
        return "n/a"
    text = f"{r[key] / scale:{spec}}"
    paired = None
    if key.endswith("_ms"):  # a latency: eager_ms / ort_ms
        runtime = key[:-len("_ms")]
        text += "*" if r.get(f"{runtime}_contended") else ""
        if r["name"] != r["ratios"]["reference"]:
            paired = r.get(f"{runtime}_paired_ratio")
    ratio = r["ratios"].get(key)
    if ratio is None:
        return text
    return f"{text} (x{ratio:.3f}" + ("" if paired is None else f", paired x{paired:.3f}") + ")"


def _input_text(settings):
    """The input size of the run: one for all rows, or each config's own."""
    if settings["input_size"] is None:
        return "Input: each config's val_dataloader.image_size (column 'input')"
    return f"Input {settings['input_size'][0]}x{settings['input_size'][1]}"


def _settings_note(settings, results):
    """The table's first line: how it was measured, what the ratios are against, what memory means."""
    s = settings
    references = sorted({r["ratios"]["reference"] for r in results}, key=[r["name"] for r in results].index)
    return (
        f"{_input_text(s)}, batch 1, {s['threads']} threads (torch and onnxruntime), "
        f"median of {s['runs']} runs after {s['warmup']} warm-up, in blocks of {s['block']} per model; "
        f"CPU: {s['cpu']}; "
        f"load average before/after: {s['load_before']:.2f}/{s['load_after']:.2f}; latencies are medians over "
        f"runs without other CPU load (* = too few such runs, median over all). "
        f"Ratios vs {' / '.join(references)} (the first row of each detector family): ratio of medians, and "
        f"'paired': median over blocks of "
        f"(block median / mean of the reference's blocks just before and after), which follows drifts in "
        f"machine speed. Memory: {s['memory_note']}")


def _depth_note(results):
    """--anydepth: how to read the depth tags in the model column."""
    return (f"Depths of {results[0]['config']}: bXXXX = skip flags of backbone stages res2..res5, "
            "nN = neck skip, dN = decoder layers run (specs in benchmark.json); params = those the depth runs.")


def _row(r, with_paper):
    """One row of the table."""
    return (f"| {r['name']} | {r['input_size'][0]}x{r['input_size'][1]} | {_cell(r, 'params', '.2f', 1e6)} "
            f"| {_cell(r, 'gflops', '.2f')} "
            f"| {_cell(r, 'eager_ms', '.1f')} | {_cell(r, 'ort_ms', '.1f')} "
            f"| {_fmt(r['eager_peak_mib'], '.0f')} | {_fmt(r['ort_peak_mib'], '.0f')} |"
            + ("".join(f" {c} |" for c in paper_cells(r)) if with_paper else ""))


def markdown_table(report):
    """benchmark.md: notes on the settings (and on depths, paper columns), then a row per result."""
    s, results = report["settings"], report["results"]
    with_paper = has_paper_figures(results)
    lines = [
        _settings_note(s, results),
        *([_depth_note(results)] if s.get("anydepth") else []),
        *([paper_note(results)] if with_paper else []),
        "",
        TABLE_COLUMNS + (PAPER_COLUMNS if with_paper else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|---|---|---|" if with_paper else ""),
        *(_row(r, with_paper) for r in results),
    ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- PNG

def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path):
    """Lay out, write (120 dpi) and close the figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)


def _bar_panel(ax, results, key, title):
    """One bar per model for `key`, each annotated with its ratio to its reference."""
    names = [r["name"] for r in results]
    values = [r[key] or 0.0 for r in results]  # n/a (external ONNX files) drawn as no bar
    colors = ["0.6" if r["name"] == r["ratios"]["reference"] else "tab:blue" if r.get("config")
              else "tab:orange" for r in results]  # grey: references, orange: --onnx files
    bars = ax.bar(range(len(names)), values, color=colors)
    for bar, r in zip(bars, results):
        if key in r["ratios"]:
            ax.annotate(f"x{r['ratios'][key]:.3f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set_title(title)
    ax.set_ylim(0, 1.15 * max(values + [1e-9]))


def _paper_panel(ax, results):
    """Latency ratio to the reference per model: ours (onnxruntime) next to the paper's."""
    names, x = [r["name"] for r in results], range(len(results))
    ours = [r["ratios"].get("ort_ms", 0.0) for r in results]
    paper = [r.get("paper", {}).get("ratios", {}).get("latency_ms", 0.0) for r in results]
    ax.bar([i - 0.2 for i in x], ours, width=0.4, label="ours, onnxruntime (CPU)", color="tab:blue")
    ax.bar([i + 0.2 for i in x], paper, width=0.4, label="paper (GPU)", color="tab:green")
    ax.axhline(1.0, color="0.5", lw=0.8)
    ax.set_xticks(list(x), names, rotation=20, ha="right", fontsize=8)
    ax.set_title("latency / own baseline")
    ax.legend(fontsize=7)


def plot(report, path):
    """Bar charts of GFLOPs and the two latencies, one bar per model (grey: a family's reference);
    with paper figures, a fourth panel: latency ratio to the reference, ours (onnxruntime) vs the paper's."""
    results = report["results"]
    panels = [("gflops", "GFLOPs"), ("eager_ms", "PyTorch eager (ms)"), ("ort_ms", "onnxruntime (ms)")]
    with_paper = has_paper_figures(results)
    fig, axes = pyplot().subplots(1, len(panels) + with_paper, figsize=(4.2 * (len(panels) + with_paper), 3.8))
    for ax, (key, title) in zip(axes, panels):
        _bar_panel(ax, results, key, title)
    if with_paper:
        _paper_panel(axes[-1], results)
    s = report["settings"]
    size = "input per config" if s["input_size"] is None else f"{s['input_size'][0]}x{s['input_size'][1]}"
    fig.suptitle(f"{size}, batch 1, {s['threads']} threads, CPU")
    save_figure(fig, path)


# ----------------------------------------------------------------------------- files

def write_outputs(report, out_dir, plot=plot, table=markdown_table):
    """benchmark.json / .md (`table`) / .png (`plot`) in out_dir; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: os.path.join(out_dir, f"benchmark.{ext}") for ext in ("json", "md", "png")}
    with open(paths["json"], "w") as f:
        json.dump(report, f, indent=2)
    with open(paths["md"], "w") as f:
        f.write(table(report))
    plot(report, paths["png"])
    return paths


def publish(report, out_dir, log, plot=plot, table=markdown_table):
    """write_outputs, then log the table and where the files went; returns the report."""
    paths = write_outputs(report, out_dir, plot, table)
    log(table(report))
    log("wrote " + ", ".join(paths.values()))
    return report
