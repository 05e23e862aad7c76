"""rtdetr_fine/engine/run_dir.py: a run in output_dir is never replaced silently."""
import os

import pytest

from rtdetr_fine.cli import UserError
from rtdetr_fine.engine.run_dir import check_run_dir, replace_previous_run


def make_run(folder, epochs=2):
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("last.pth", "best.pth"):
        (folder / name).write_bytes(b"PK\x03\x04")
    (folder / "log.txt").write_text("{}\n" * epochs)
    (folder / "tensorboard").mkdir()
    (folder / "tensorboard" / "events.out.tfevents.1.host").write_bytes(b"x")
    return folder


def test_a_new_run_refuses_a_folder_holding_one_and_names_the_ways_on(tmp_path):
    run = make_run(tmp_path / "run")
    with pytest.raises(UserError) as e:
        check_run_dir(str(run))
    message = str(e.value)
    assert str(run) in message and "log.txt with 2 epoch(s)" in message
    assert f"-r {run / 'last.pth'}" in message and "--overwrite" in message and "output_dir=" in message
    with pytest.raises(UserError):   # -r from another folder is a new run here too
        check_run_dir(str(run), resume=str(tmp_path / "other" / "last.pth"))
    assert sorted(p.name for p in run.iterdir()) == ["best.pth", "last.pth", "log.txt", "tensorboard"]


def test_resume_in_place_new_folders_and_stale_leftovers_are_allowed(tmp_path):
    run = make_run(tmp_path / "run")
    check_run_dir(str(run), resume=str(run / "last.pth"))        # the run's own resume
    check_run_dir(str(tmp_path / "fresh"))                          # not there yet
    (tmp_path / "only_tmp").mkdir()
    (tmp_path / "only_tmp" / "last.pth.abc.tmp").write_bytes(b"x")  # a killed first save is not a run
    check_run_dir(str(tmp_path / "only_tmp"))
    with pytest.raises(UserError, match="leave out --overwrite"):
        check_run_dir(str(run), resume=str(run / "last.pth"), overwrite=True)


def test_overwrite_replaces_the_run_and_keeps_its_log(tmp_path):
    run = make_run(tmp_path / "run")
    check_run_dir(str(run), overwrite=True)
    said = []
    replace_previous_run(str(run), said.append)
    assert sorted(p.name for p in run.iterdir()) == ["log.previous.txt", "tensorboard"]
    assert (run / "log.previous.txt").read_text() == "{}\n{}\n"
    assert not list((run / "tensorboard").iterdir())
    assert "last.pth" in said[0] and "best.pth" in said[0] and "log.previous.txt" in said[0]


def test_output_dir_that_is_a_file_is_named(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="output_dir"):
        check_run_dir(str(tmp_path / "f"))


# ---------------------------------------------------------------- history and failed saves (issue 25)

def _checkpoint(path, epoch):
    import torch
    torch.save({"epoch": epoch, "model": {"w": torch.full((3,), float(epoch))}}, path)
    return path


def _log(folder, epochs):
    import json
    (folder / "log.txt").write_text("".join(json.dumps({"epoch": e, "val_AP": e / 10}) + "\n" for e in epochs))


def test_resuming_an_older_checkpoint_of_the_run_is_refused_naming_both_epochs(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _checkpoint(run / "last.pth", 3)
    old = _checkpoint(run / "epoch1.pth", 1)
    with pytest.raises(UserError) as e:
        check_run_dir(str(run), resume=str(old))
    assert f"-r {old} is at epoch 1, but {run / 'last.pth'} of the same run is at epoch 3" in str(e.value)
    assert "--overwrite" in str(e.value)
    check_run_dir(str(run), resume=str(old), overwrite=True)           # going back on purpose
    check_run_dir(str(run), resume=str(run / "last.pth"))             # the latest: as ever
    later = _checkpoint(run / "copy.pth", 5)                         # a later one (e.g. copied in): no loss
    check_run_dir(str(run), resume=str(later))


def test_resume_sets_later_epochs_aside_so_the_log_has_each_epoch_once(tmp_path):
    from rtdetr_fine.engine.run_dir import set_aside_later_epochs
    run = tmp_path / "run"
    run.mkdir()
    _log(run, [0, 1, 2, 3])
    _checkpoint(run / "last.pth", 3)
    _checkpoint(run / "best.pth", 1)
    old = _checkpoint(run / "epoch1.pth", 1)
    said = []
    set_aside_later_epochs(str(run), 2, str(old), said.append)
    assert [line[:12] for line in (run / "log.txt").read_text().splitlines()] == ['{"epoch": 0,', '{"epoch": 1,']
    assert [line[:12] for line in (run / "log.previous.txt").read_text().splitlines()] == ['{"epoch": 2,',
                                                                                          '{"epoch": 3,']
    assert sorted(p.name for p in run.iterdir()) == ["best.pth", "epoch1.pth", "last.previous.pth", "log.previous.txt",
                                                     "log.txt"]
    assert "2 log.txt line(s)" in said[0] and "last.pth (epoch 3) -> last.previous.pth" in said[0]
    assert set_aside_later_epochs(str(run), 2, str(old), said.append) == []   # nothing more to move


class _FullDisk:
    """os.fdopen's file, on a disk that fills up after `room` bytes: writes raise ENOSPC."""

    def __init__(self, real_fdopen, room):
        self.real_fdopen, self.room = real_fdopen, room

    def __call__(self, fd, mode="r", *args, **kwargs):
        import errno
        f, outer = self.real_fdopen(fd, mode, *args, **kwargs), self
        real_write = f.write

        def write(data):
            outer.room -= len(data)
            if outer.room < 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(data)
        f.write = write
        return f


def test_disk_full_during_a_checkpoint_save_keeps_the_previous_pair(tmp_path, monkeypatch):
    import torch

    from rtdetr_fine.cli import WriteError
    from rtdetr_fine.engine.run_dir import save_epoch
    run = tmp_path / "run"
    run.mkdir()
    save_epoch(str(run), {"epoch": 0, "model": {"w": torch.zeros(10)}}, {"epoch": 0}, improved=True)
    log_before = (run / "log.txt").read_bytes()
    monkeypatch.setattr(os, "fdopen", _FullDisk(os.fdopen, room=500))
    with pytest.raises(WriteError) as e:
        save_epoch(str(run), {"epoch": 1, "model": {"w": torch.zeros(10000)}}, {"epoch": 1}, improved=True)
    assert str(e.value) == (f"cannot write {run / 'last.pth'}: No space left on device; the previous last.pth is "
                            "kept; the temporary file was removed")
    assert e.value.errno == 28 and "unexpected pos" not in str(e.value)
    monkeypatch.undo()
    assert (run / "log.txt").read_bytes() == log_before                    # its line taken back
    assert torch.load(run / "last.pth", weights_only=True)["epoch"] == 0     # the previous complete checkpoint
    assert sorted(p.name for p in run.iterdir()) == ["best.pth", "last.pth", "log.txt"]   # no temp file


def test_disk_full_on_the_log_line_writes_no_checkpoint(tmp_path, monkeypatch):
    import errno

    import torch

    from rtdetr_fine.cli import WriteError
    from rtdetr_fine.engine.run_dir import save_epoch
    run = tmp_path / "run"
    run.mkdir()
    save_epoch(str(run), {"epoch": 0}, {"epoch": 0}, improved=False)

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(WriteError, match=f"cannot write {run / 'log.txt'}: No space left on device; log.txt is kept"):
        save_epoch(str(run), {"epoch": 1}, {"epoch": 1}, improved=False)
    monkeypatch.undo()
    assert (run / "log.txt").read_text() == '{"epoch": 0}\n'
    assert torch.load(run / "last.pth", weights_only=True)["epoch"] == 0
