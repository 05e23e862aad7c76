"""rtdetr_fine/engine/run_dir.py: a run in output_dir is never replaced silently."""
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
