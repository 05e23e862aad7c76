"""rtdetr_fine/cli.py: the error boundary of the command lines and the output-path checks."""
import os

import pytest

from rtdetr_fine import cli
from rtdetr_fine.config import ConfigError

WORKER_ERROR = (
    "Caught OSError in DataLoader worker process 0.\n"
    "Original Traceback (most recent call last):\n"
    '  File "/x/torch/utils/data/_utils/worker.py", line 349, in _worker_loop\n'
    "    data = fetcher.fetch(index)\n"
    "OSError: cannot read image /data/val/000003.jpg (image id 3): image file is truncated\n")


def boundary(fn, capsys):
    """cli.run_main(fn) -> (exit code, stderr)."""
    capsys.readouterr()
    code = cli.run_main(lambda argv: fn(), [], prog="tool.py")
    return code, capsys.readouterr().err


@pytest.mark.parametrize("error", [ValueError("bad value in x.yml"), FileNotFoundError("nope.pth not found"),
                                   ConfigError("x.yml: epochs must be ..."), cli.UserError("--flag wrong")])
def test_user_errors_are_one_line_with_exit_code_1(capsys, error):
    def fail():
        raise error
    code, err = boundary(fail, capsys)
    assert code == cli.EXIT_ERROR
    assert err == f"tool.py: error: {error}\n"


def test_programming_errors_keep_their_traceback(capsys):
    def fail():
        raise KeyError("a bug")
    with pytest.raises(KeyError):
        boundary(fail, capsys)


def test_dataloader_worker_error_is_the_workers_message(capsys):
    def fail():
        raise OSError(WORKER_ERROR)      # torch re-raises the worker's OSError with this text
    code, err = boundary(fail, capsys)
    assert code == 1 and "Traceback" not in err and "DataLoader worker" not in err
    assert err.strip() == ("tool.py: error: cannot read image /data/val/000003.jpg (image id 3): "
                           "image file is truncated")

    def fail_wrapped():   # a worker exception torch could not rebuild comes as a RuntimeError
        raise RuntimeError(WORKER_ERROR.replace("Caught OSError", "Caught CocoFormatError")
                           .replace("OSError: cannot", "rtdetr_fine.data.coco.CocoFormatError: cannot"))
    code, err = boundary(fail_wrapped, capsys)
    assert code == 1 and err.startswith("tool.py: error: cannot read image /data/val/000003.jpg")


def test_ctrl_c_says_what_is_left_also_when_torch_wraps_it(capsys):
    def interrupted():
        cli.set_status("last complete checkpoint: out/last.pth (3 epochs)")
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:   # e.g. torch.save's zip writer failing while the interrupt unwinds
            raise RuntimeError("[enforce fail at inline_container.cc] . unexpected pos")
    code, err = boundary(interrupted, capsys)
    assert code == cli.EXIT_INTERRUPTED and "Traceback" not in err
    assert err == "tool.py: interrupted; last complete checkpoint: out/last.pth (3 epochs)\n"


def test_output_file_checks_fail_before_any_work(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        cli.check_output_file(str(tmp_path), "--output-json")
    with pytest.raises(NotADirectoryError, match="a_file is a file"):
        cli.check_output_file(str(tmp_path / "a_file" / "report.json"), "--output-json")
    with pytest.raises(NotADirectoryError, match="a_file is a file"):
        cli.check_output_dir(str(tmp_path / "a_file"), "-o")
    path = tmp_path / "new" / "deeper" / "report.json"
    assert cli.check_output_file(str(path)) == str(path)
    assert not (tmp_path / "new").exists()                 # checking creates nothing


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc (a folder nobody can create files in)")
def test_unwritable_folder_is_named():
    with pytest.raises(PermissionError, match="/proc/self"):
        cli.check_output_file("/proc/self/report.json", "-o")


def test_write_text_atomic_leaves_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "report.json"
    cli.write_text_atomic(str(path), "old")

    def broken_replace(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        cli.write_text_atomic(str(path), "new")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["report.json"]   # no temp file left
