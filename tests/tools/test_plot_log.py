"""tools/plot_log.py: the plotted points are the log's, the reference curves are the authors', errors are named."""
import json
import os
import sys

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
plot_log = pytest.importorskip("plot_log")

from rtdetr_fine.evaluation.reference import REFERENCE_CURVES  # noqa: E402


def write_log(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def record(epoch, ap, loss):
    return {"epoch": epoch, "val_AP": ap, "train_loss": loss, "train_loss_vfl": loss / 4, "train_loss_bbox": loss / 8,
            "train_loss_giou": loss / 6}


def test_png_from_a_real_and_a_resumed_log(custom_run, tmp_path):
    real = custom_run["out_dir"] / "log.txt"
    # a resumed run repeats epoch 1: its last record counts
    resumed = write_log(tmp_path / "fine_run" / "log.txt",
                        [record(0, 0.10, 30.0), record(1, 0.15, 25.0), record(1, 0.20, 24.0), record(2, 0.25, 20.0)])
    out = tmp_path / "curves.png"
    assert plot_log.main([str(real), str(resumed), "--reference", "r18_1x", "-o", str(out)]) == 0
    with Image.open(out) as png:
        assert png.size[0] > 1000 and len(np.unique(np.asarray(png.convert("RGB")).reshape(-1, 3), axis=0)) > 50

    runs = {"run": plot_log.read_log(str(real)), "fine_run": plot_log.read_log(str(resumed))}
    fig = plot_log.plot(runs, "r18_1x")
    ax_ap, ax_loss, ax_terms = fig.axes
    lines = {line.get_label(): line for line in ax_ap.lines}
    real_record = json.loads(real.read_text().splitlines()[-1])
    assert list(lines["run"].get_xdata()) == [1] and list(lines["run"].get_ydata()) == [100 * real_record["val_AP"]]
    assert list(lines["fine_run"].get_xdata()) == [1, 2, 3]
    assert list(lines["fine_run"].get_ydata()) == pytest.approx([10.0, 20.0, 25.0])
    for name, ap in REFERENCE_CURVES["r18_1x"].items():
        assert list(lines[f"{name}, r18_1x"].get_ydata()) == ap
    loss = {line.get_label(): list(line.get_ydata()) for line in ax_loss.lines}
    assert loss["fine_run"] == [30.0, 24.0, 20.0] and loss["run"] == [real_record["train_loss"]]
    assert len(ax_terms.lines) == 6


def test_reference_numbers():
    curves = REFERENCE_CURVES["r18_1x"]
    assert len(curves) == 6 and all(len(ap) == 12 for ap in curves.values())
    finals = {name.split(" ")[0]: ap[-1] for name, ap in curves.items()}
    # AP after epoch 12 in the authors' logs (the FINE paper's Table 2b: FaPN 39.0, MGC 38.6, AdaFPN 38.3, SNI 38.5)
    assert finals == {"baseline": 38.6, "FINE": 39.4, "FaPN": 39.0, "MGC": 38.6, "AdaFPN": 38.3, "SNI": 38.5}
    assert all(a < b for ap in curves.values() for a, b in zip(ap[1:3], ap[2:4]))   # rising early on


def test_missing_and_malformed_logs_are_named(tmp_path, capsys):
    bad = tmp_path / "bad" / "log.txt"
    bad.parent.mkdir()
    bad.write_text(json.dumps(record(0, 0.1, 3.0)) + "\n{not json\n")
    for logs, message in (([str(tmp_path / "none" / "log.txt")], f"log not found: {tmp_path / 'none' / 'log.txt'}"),
                          ([str(bad)], f"{bad} line 2: not a JSON record")):
        assert plot_log.main([*logs, "-o", str(tmp_path / "x.png")]) == 1       # an exit code, no exception
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
    assert plot_log.main([str(bad), "-o", str(tmp_path)]) == 1                   # -o a folder: before reading
    assert f"-o {str(tmp_path)!r} is a directory" in capsys.readouterr().err
    empty = write_log(tmp_path / "empty" / "log.txt", [])
    with pytest.raises(plot_log.LogError, match="no epoch records"):
        plot_log.read_log(str(empty))


@pytest.mark.parametrize("dpi", [100000, 601, 0])
def test_dpi_is_bounded_before_any_drawing(tmp_path, capsys, dpi):
    log = write_log(tmp_path / "run" / "log.txt", [record(0, 0.1, 3.0)])
    assert plot_log.main([str(log), "-o", str(tmp_path / "x.png"), "--dpi", str(dpi)]) == 1
    assert f"--dpi must be from 1 to {plot_log.MAX_DPI}, got {dpi}" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("with_log", [True, False])
def test_a_run_folder_given_as_the_log_says_what_to_give(tmp_path, capsys, with_log):
    run = tmp_path / "run"
    run.mkdir()
    if with_log:
        write_log(run / "log.txt", [record(0, 0.1, 3.0)])
    assert plot_log.main([str(run), "-o", str(tmp_path / "x.png")]) == 1
    err = capsys.readouterr().err
    assert f"{run} is a folder, not a log file; give the run's log, e.g. {run / 'log.txt'}" in err
    assert "log not found" not in err
