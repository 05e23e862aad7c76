"""Plot train.py logs: val AP per epoch and the training losses, optionally against the FINE authors' curves.

    python tools/plot_log.py output/rtdetr_r18_fine/log.txt
    python tools/plot_log.py output/r18/log.txt output/r18_fine/log.txt --reference r18_1x -o curves.png

A log is train.py's log.txt: one JSON record per epoch ("epoch" from 0, "val_AP" in [0, 1],
"train_loss" and its terms). AP is drawn in % after epoch 1, 2, ... (record "epoch" + 1), the way
the reference curves (rtdetr_fine/evaluation/reference.py, from the authors' logs, not measured here) count.
A resumed run may repeat epochs in its log: the last record of an epoch is used.
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from rtdetr_fine import cli  # noqa: E402
from rtdetr_fine.evaluation.plots import save_figure, style  # noqa: E402
from rtdetr_fine.evaluation.reference import REFERENCE_CURVES, reference_curves  # noqa: E402

LOSS_TERMS = ("train_loss_vfl", "train_loss_bbox", "train_loss_giou")   # the last decoder layer's terms


MAX_DPI = 600


class LogError(cli.UserError):
    """A user-facing problem with a log file: printed without a traceback."""


def read_log(path: str) -> list:
    """Epoch records of a train.py log.txt, one per epoch (the last one written), in epoch order."""
    if os.path.isdir(path):
        raise LogError(f"{path} is a folder, not a log file; give the run's log, e.g. "
                       f"{os.path.join(path, 'log.txt')}")
    if not os.path.isfile(path):
        raise LogError(f"log not found: {path}")
    by_epoch = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise LogError(f"{path} line {number}: not a JSON record ({e})") from None
            if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
                raise LogError(f"{path} line {number}: no integer 'epoch' (expected train.py's log.txt)")
            by_epoch[record["epoch"]] = record
    if not by_epoch:
        raise LogError(f"{path} has no epoch records (expected train.py's log.txt: one JSON line per epoch)")
    return [by_epoch[e] for e in sorted(by_epoch)]


def run_labels(paths: list) -> list:
    """A short label per log: its folder name (train.py's output_dir), the full path if that repeats."""
    names = [os.path.basename(os.path.dirname(os.path.abspath(p))) or p for p in paths]
    return [n if names.count(n) == 1 else p for n, p in zip(names, paths)]


def series(records: list, key: str, scale: float = 1.0):
    """(epochs counted from 1, values) of the records that have `key`."""
    points = [(r["epoch"] + 1, r[key] * scale) for r in records if isinstance(r.get(key), (int, float))]
    return [p[0] for p in points], [p[1] for p in points]


def plot(runs: dict, reference: str = None):
    """Figure with three panels: val AP (%), total training loss, the loss terms. runs: {label: records}.
    Drawn in the repository's plot style (rtdetr_fine/evaluation/plots.py)."""
    with style() as plt:
        return _plot(plt, runs, reference)


def _plot(plt, runs, reference):
    fig, (ax_ap, ax_loss, ax_terms) = plt.subplots(1, 3, figsize=(16, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if reference:
        curves = reference_curves(reference)
        for i, (label, ap) in enumerate(curves.items()):   # grey, told apart by shade and marker
            ax_ap.plot(range(1, len(ap) + 1), ap, linestyle="--", marker=".ov^sD"[i % 6], markersize=4, color="0.35",
                       alpha=0.45 + 0.55 * i / max(1, len(curves) - 1), label=f"{label}, {reference}")
    for i, (label, records) in enumerate(runs.items()):
        color = colors[i % len(colors)]
        ax_ap.plot(*series(records, "val_AP", 100.0), marker="o", color=color, label=label)
        ax_loss.plot(*series(records, "train_loss"), marker="o", color=color, label=label)
        for term, style in zip(LOSS_TERMS, ("-", "--", ":")):
            ax_terms.plot(*series(records, term), linestyle=style, marker=".", color=color,
                          label=f"{label}: {term[len('train_'):]}")
    ax_ap.set(title="val AP (COCO metric)", xlabel="epoch", ylabel="AP (%)")
    ax_loss.set(title="training loss (sum of all terms, mean per epoch)", xlabel="epoch", ylabel="loss")
    ax_terms.set(title="last decoder layer's loss terms", xlabel="epoch", ylabel="loss")
    for ax in (ax_ap, ax_loss, ax_terms):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend()
    fig.tight_layout()
    return fig


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("logs", nargs="+", metavar="LOG", help="train.py log.txt files")
    p.add_argument("--reference", choices=sorted(REFERENCE_CURVES),
                   help="overlay the FINE authors' per-epoch AP (from their logs)")
    p.add_argument("-o", "--output", default="curves.png", help="PNG to write (default curves.png)")
    p.add_argument("--dpi", type=int, default=110, help="PNG resolution (default 110)")
    return p.parse_args(argv)


def work(argv=None):
    """The command line's work; main() runs it behind the error boundary (rtdetr_fine/cli.py)."""
    args = parse_args(argv)
    if not 1 <= args.dpi <= MAX_DPI:   # the 16 x 4.8 inch figure: 600 dpi is already 9600 x 2880 px
        raise LogError(f"--dpi must be from 1 to {MAX_DPI}, got {args.dpi}")
    cli.check_output_file(args.output, "-o")
    cli.check_outputs_apart([("-o", args.output)], [("LOG", path) for path in args.logs])
    cli.require({"matplotlib": "matplotlib"}, "plot_log.py")
    runs = dict(zip(run_labels(args.logs), (read_log(p) for p in args.logs)))
    save_figure(plot(runs, args.reference), args.output, args.dpi)
    print(f"wrote {args.output} ({len(runs)} run(s)" + (f", reference {args.reference})" if args.reference else ")"))
    return 0


def main(argv=None) -> int:
    """Exit code 0 on success; a user error is one line on stderr and exit code 1."""
    return cli.run_main(work, argv, prog="plot_log.py")


if __name__ == "__main__":
    sys.exit(main())
