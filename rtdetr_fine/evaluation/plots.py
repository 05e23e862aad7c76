"""Pictures: the one matplotlib style of the repository's plots (tools/plot_log.py, eval.py --plots), and
eval.py's evaluation pictures, drawn from what the evaluation computed (no scoring here).

    with style() as plt:
        fig, ax = plt.subplots()
        ...
    save_figure(fig, "out.png", dpi=110)

eval.py --plots DIR writes (write_evaluation_plots):
  pr_curves.png          precision-recall, the mean over the classes at IoU 0.5 and 0.75
  pr_worst_classes.png   precision-recall of the K classes with the lowest AP, at IoU 0.5 and 0.75
  ap_per_class.png       AP of every class under the metric (bars, sorted)
  ap_by_size.png         COCO AP, AP50, AP75 of small / medium / large objects (the FINE paper's Fig. 4 right)
  false_positives.png    false and true positives per image against the score threshold (Fig. 4 left)
matplotlib runs on its Agg backend: files only, no display needed.
"""
import contextlib
import os

import numpy as np

# The look every plot of the repository shares: light grid, no top / right frame, small legends.
STYLE = {
    "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False,
    "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
    "legend.fontsize": 7, "legend.framealpha": 0.8, "lines.markersize": 4, "figure.titlesize": 10,
}
IOU_STYLES = {0.5: "-", 0.75: "--"}          # line style of a PR curve by IoU threshold
SIZE_NAMES = ("small", "medium", "large")
FILES = ("pr_curves.png", "pr_worst_classes.png", "ap_per_class.png", "ap_by_size.png", "false_positives.png")


@contextlib.contextmanager
def style():
    """matplotlib.pyplot (Agg backend) with STYLE in force for the figures made inside the block."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    with plt.rc_context(STYLE):
        yield plt


def save_figure(fig, path: str, dpi: int = 100) -> str:
    """Write `fig` as PNG to `path` (its folder created) and free it. Returns the path."""
    import matplotlib.pyplot as plt
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)
    return path


def curve_ap(precision: np.ndarray) -> float:
    """The AP of an interpolated precision curve: its mean over the recall levels (COCO's definition)."""
    return float(np.mean(precision)) if len(precision) else 0.0


def pr_curves_figure(plt, curves, title: str):
    """One panel: the mean precision-recall curve over the classes at each IoU threshold of `curves`
    (metric.PRCurves), labelled with its AP."""
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    for iou in curves.by_iou:
        mean = curves.mean(iou)
        ax.plot(curves.recall, mean, IOU_STYLES.get(iou, ":"),
                label=f"IoU {iou:.2f}: AP {curve_ap(mean):.3f} ({len(curves.by_iou[iou])} classes)")
    _pr_axes(ax, title)
    fig.tight_layout()
    return fig


def worst_classes(per_class: dict, objects: dict, count: int) -> list:
    """The `count` class names with the lowest AP (per_class: {name: AP}, -1 = no ground truth), among
    those with objects to find; ties keep the class order."""
    ranked = sorted((ap, i, name) for i, (name, ap) in enumerate(per_class.items()) if ap >= 0 and objects.get(name))
    return [name for _, _, name in ranked[:count]]


def worst_classes_figure(plt, curves, names: list, per_class: dict, metric_label: str):
    """A panel per class of `names`: its precision-recall curves at each IoU threshold."""
    cols = min(3, max(len(names), 1))
    rows = max(1, -(-len(names) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for iou, by_class in curves.by_iou.items():
            precision = by_class[name]
            ax.plot(curves.recall, precision, IOU_STYLES.get(iou, ":"), label=f"IoU {iou:.2f}: AP {curve_ap(precision):.3f}")
        _pr_axes(ax, f"{name} ({metric_label} {per_class[name]:.3f})")
    for ax in list(axes.flat)[len(names):]:
        ax.set_axis_off()
    fig.suptitle(f"the {len(names)} classes with the lowest {metric_label}")
    fig.tight_layout()
    return fig


def _pr_axes(ax, title):
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=title)
    ax.legend(loc="upper right")


def ap_per_class_figure(plt, per_class: dict, objects: dict, metric_label: str, headline: float, headline_label: str):
    """Horizontal bars: each class's AP under the metric, best at the top; classes without ground truth
    (AP -1) are listed as n/a at the bottom."""
    scored = sorted(((ap, name) for name, ap in per_class.items() if ap >= 0), key=lambda t: -t[0])
    absent = [name for name, ap in per_class.items() if ap < 0]
    names = [n for _, n in scored] + absent
    values = [ap for ap, _ in scored] + [0.0] * len(absent)
    fig, ax = plt.subplots(figsize=(6.4, 1.2 + 0.24 * max(len(names), 1)))
    y = np.arange(len(names))
    bars = ax.barh(y, values, color="tab:blue")
    for bar, name, value in zip(bars, names, values):
        text = "n/a (no objects)" if name in absent else f"{value:.3f}  ({objects.get(name, 0)} objects)"
        ax.text(bar.get_width() + 0.01, bar.get_y() + bar.get_height() / 2, text, va="center", fontsize=7)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.axvline(headline, color="tab:red", linestyle="--", linewidth=1, label=f"{headline_label} {headline:.3f}")
    ax.set(xlim=(0, 1.25), xlabel=metric_label, title=f"{metric_label} per class ({len(scored)} classes scored)")
    ax.grid(axis="y", visible=False)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def ap_by_size_figure(plt, sizes: dict):
    """Grouped bars: COCO AP, AP50 and AP75 for small, medium and large objects (analysis.ap_by_size),
    with the ground-truth boxes of each size; a size without boxes (-1) shows n/a."""
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    x = np.arange(len(SIZE_NAMES))
    for i, key in enumerate(("AP", "AP50", "AP75")):
        values = [max(sizes[s][key], 0.0) for s in SIZE_NAMES]
        bars = ax.bar(x + (i - 1) * 0.27, values, width=0.27, label=key)
        for bar, s in zip(bars, SIZE_NAMES):
            shown = "n/a" if sizes[s][key] < 0 else f"{sizes[s][key]:.2f}"
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01, shown, ha="center", fontsize=6)
    ax.set_xticks(x, [f"{s}\n({sizes[s]['gt_boxes']} boxes)" for s in SIZE_NAMES])
    ax.set(ylim=(0, 1.1), ylabel="COCO AP", title="AP by object size (COCO area ranges)")
    ax.grid(axis="x", visible=False)
    ax.legend()
    fig.tight_layout()
    return fig


def false_positives_figure(plt, curve: dict, marked: dict):
    """False and true positives per image as the score threshold rises (analysis.false_positive_curve),
    with the count at eval.py's --fp-score threshold (analysis.count_false_positives) marked."""
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    ax.plot(curve["thresholds"], curve["false_positives_per_image"], "o-", color="tab:red",
            label="false positives per image")
    ax.plot(curve["thresholds"], curve["true_positives_per_image"], "s--", color="tab:green",
            label="true positives per image")
    ax.plot([marked["score_threshold"]], [marked["per_image"]], "k*", markersize=10,
            label=f"score >= {marked['score_threshold']:g}: {marked['per_image']:.3f} FP per image")
    ax.set(xlim=(0, 1), xlabel="score threshold", ylabel="per image",
           title=f"confident detections on {curve['images']} images (match at IoU {curve['iou_threshold']:g})")
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    return fig


def write_evaluation_plots(folder: str, curves, metric, sizes: dict, fp_curve: dict, false_positives: dict,
                           worst: int = 6, dpi: int = 100) -> list:
    """eval.py --plots: the five pictures of the module docstring in `folder`, from metric.PRCurves
    `curves`, the metric.MetricResult `metric`, analysis.ap_by_size `sizes`, analysis.false_positive_curve
    `fp_curve` and analysis.count_false_positives `false_positives`. Returns the paths written."""
    from .metric import METRIC_TITLES
    label = "AP" if metric.metric == "coco" else f"{metric.metric.upper()} AP"
    headline = "AP" if metric.metric == "coco" else f"{metric.metric.upper()} mAP"
    written = []
    with style() as plt:
        figures = {
            "pr_curves.png": pr_curves_figure(plt, curves, f"precision-recall, mean over the classes\n"
                                                           f"(metric: {METRIC_TITLES[metric.metric]})"),
            "pr_worst_classes.png": worst_classes_figure(plt, curves, worst_classes(metric.per_class, metric.objects,
                                                                                    worst), metric.per_class, label),
            "ap_per_class.png": ap_per_class_figure(plt, metric.per_class, metric.objects, label, metric.value,
                                                    headline),
            "ap_by_size.png": ap_by_size_figure(plt, sizes),
            "false_positives.png": false_positives_figure(plt, fp_curve, false_positives),
        }
        for name, fig in figures.items():
            written.append(save_figure(fig, os.path.join(folder, name), dpi))
    return written
