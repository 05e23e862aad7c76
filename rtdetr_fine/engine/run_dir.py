"""train.py's output_dir: a run is never replaced silently.

A run folder holds last.pth, best.pth and log.txt (plus config.yml and tensorboard/). A new run
(no -r, or -r from another folder) refuses a folder that holds a run, naming the ways on; with
--overwrite it replaces the run and says what it removed. A resumed run continues in the folder of its
checkpoint unless output_dir is given with -u (resume_folder).

Its history is protected: -r of a checkpoint older than the folder's last.pth is refused, naming the two
epochs (--overwrite goes back on purpose, check_history); on resume, log lines and checkpoints of epochs
after the resumed one are set aside as log.previous.txt, last.previous.pth, best.previous.pth
(set_aside_later_epochs), so log.txt never holds an epoch twice. An epoch's log line and last.pth are
written together or not at all (save_epoch).
"""
import glob
import json
import os

from .. import checkpoint
from ..cli import UserError, check_output_dir, raise_write_error, set_status
from ..config import override_keys

RUN_FILES = ("last.pth", "best.pth", "log.txt")


def existing_run(out_dir: str) -> list:
    """The run files in `out_dir` (RUN_FILES that exist)."""
    return [name for name in RUN_FILES if os.path.isfile(os.path.join(out_dir, name))]


def _same_folder(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _describe(out_dir: str, names: list) -> str:
    described = []
    for name in names:
        if name == "log.txt":
            with open(os.path.join(out_dir, name), errors="replace") as f:
                epochs = sum(1 for line in f if line.strip())
            described.append(f"log.txt with {epochs} epoch(s)")
        else:
            described.append(name)
    return ", ".join(described)


def resume_folder(resume: str, overrides, configured: str) -> tuple:
    """(output_dir of a run resumed from checkpoint `resume`, why): the checkpoint's own folder, where its
    run is, unless output_dir is given explicitly, with -u output_dir=... (then `configured`, the config's
    value after the overrides). A config file's output_dir is not explicit: every config names one, the
    folder a run of it starts in, which need not be where this checkpoint is (a run started with
    -u output_dir=X, or moved)."""
    folder = os.path.dirname(resume) or "."
    if "output_dir" in override_keys(overrides):
        elsewhere = "" if _same_folder(folder, configured) else f"; the run of {resume} (in {folder}) goes on there"
        return configured, f"given with -u{elsewhere}"
    unused = "" if _same_folder(folder, configured) else (
        f"; the config's output_dir {configured} is not used: -u output_dir=... writes elsewhere")
    return folder, f"the folder of -r {resume}, where its run is{unused}"


def check_run_dir(out_dir: str, resume: str | None = None, overwrite: bool = False) -> None:
    """Before anything is built: `out_dir` must be a writable folder, and must not hold a run unless
    this is that run's resume (-r OUT_DIR/...) or --overwrite was given. Errors name the folder and
    the ways on."""
    check_output_dir(out_dir, "output_dir")
    found = existing_run(out_dir) if os.path.isdir(out_dir) else []
    resuming_here = resumes_in(out_dir, resume)
    going_back = resuming_here and check_history(out_dir, resume, overwrite)
    if overwrite and resuming_here and not going_back:
        raise UserError(f"--overwrite would delete the run that -r {resume} continues in {out_dir}; "
                        "leave out --overwrite to resume it")
    if found and not resuming_here and not overwrite:
        last = os.path.join(out_dir, "last.pth")
        ways = ([f"continue it with -r {last}"] if "last.pth" in found else []) + [
            "replace it with --overwrite", "or start elsewhere with -u output_dir=OTHER_DIR"]
        raise UserError(f"output_dir {out_dir} already holds a run ({_describe(out_dir, found)}); "
                        f"not starting over it: {', '.join(ways)}")


def resumes_in(out_dir: str, resume: str | None) -> bool:
    """True when -r `resume` is a checkpoint in `out_dir` (the run goes on in its own folder)."""
    return bool(resume) and _same_folder(os.path.dirname(os.path.abspath(resume)), out_dir)


def outside_run(out_dir: str, resume: str | None, inputs: list) -> list:
    """The inputs [(what, path)] that are not the files of the run resumed in place (-r OUT_DIR/last.pth,
    -c OUT_DIR/config.yml): the output guard (cli.check_outputs_apart) checks those against out_dir."""
    if not resumes_in(out_dir, resume):
        return inputs
    return [(what, path) for what, path in inputs
            if not path or not _same_folder(os.path.dirname(os.path.abspath(path)), out_dir)]


def checkpoint_epoch(path: str):
    """The "epoch" a train.py checkpoint records (memory-mapped: its tensors are not read), or None."""
    import torch
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not readable here: restore_training says what is wrong with it
        return None
    epoch = ckpt.get("epoch") if isinstance(ckpt, dict) else None
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None


def check_history(out_dir: str, resume: str, overwrite: bool) -> bool:
    """-r of a checkpoint of the run in `out_dir`: True when it is older than the folder's last.pth (going
    back, allowed with --overwrite only; else a UserError naming both epochs)."""
    last = os.path.join(out_dir, "last.pth")
    if not os.path.isfile(last) or not os.path.isfile(resume) or os.path.samefile(last, resume):
        return False
    resumed, latest = checkpoint_epoch(resume), checkpoint_epoch(last)
    if resumed is None or latest is None or resumed >= latest:
        return False
    if not overwrite:
        raise UserError(f"-r {resume} is at epoch {resumed}, but {last} of the same run is at epoch {latest} "
                        f"(epochs as in log.txt): resuming would train over epochs {resumed + 1}..{latest}; "
                        f"continue the latest with -r {last}, or go back on purpose with --overwrite (the later "
                        "log lines and checkpoints are kept as log.previous.txt, last.previous.pth, best.previous.pth)")
    return True


def set_aside_later_epochs(out_dir: str, start_epoch: int, resume: str, log=print) -> list:
    """On resume at `start_epoch`: move log.txt's lines of epochs >= start_epoch to the end of
    log.previous.txt, and last.pth / best.pth of such epochs (not the -r file) to *.previous.pth, so the
    resumed run neither repeats log epochs nor keeps a checkpoint from another history. Returns what moved."""
    moved = []
    log_path = os.path.join(out_dir, "log.txt")
    if os.path.isfile(log_path):
        with open(log_path, errors="replace") as f:
            lines = f.readlines()
        later = [line for line in lines if (_epoch_of(line) or -1) >= start_epoch]
        if later:
            with open(os.path.join(out_dir, "log.previous.txt"), "a") as f:
                f.writelines(line if line.endswith("\n") else line + "\n" for line in later)
            from ..cli import write_text_atomic
            write_text_atomic(log_path, "".join(line for line in lines if line not in later))
            moved.append(f"{len(later)} log.txt line(s) of epochs >= {start_epoch} -> log.previous.txt")
    for name in ("last.pth", "best.pth"):
        path, aside = os.path.join(out_dir, name), name.replace(".pth", ".previous.pth")
        epoch = checkpoint_epoch(path) if os.path.isfile(path) and not os.path.samefile(path, resume) else None
        if epoch is not None and epoch >= start_epoch:
            os.replace(path, os.path.join(out_dir, aside))
            moved.append(f"{name} (epoch {epoch}) -> {aside}")
    if moved:
        log(f"resuming at epoch {start_epoch} in {out_dir}: set aside " + "; ".join(moved))
    return moved


def _epoch_of(line: str):
    try:
        record = json.loads(line)
    except ValueError:
        return None
    epoch = record.get("epoch") if isinstance(record, dict) else None
    return epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None


def save_epoch(out_dir: str, state: dict, record: dict, improved: bool) -> None:
    """An epoch's log.txt line and last.pth (and best.pth when it improved), together or not at all: the
    line is appended first and taken back when last.pth cannot be saved (disk full, Ctrl-C), which keeps
    the previous complete checkpoint. A line left without its checkpoint anyway (a kill between the two)
    is set aside by the next resume (set_aside_later_epochs)."""
    log_path, last = os.path.join(out_dir, "log.txt"), os.path.join(out_dir, "last.pth")
    size = append_line(log_path, json.dumps(record))
    try:
        checkpoint.save_atomic(state, last)
    except BaseException:
        _truncate(log_path, size)
        raise
    set_status(f"last complete checkpoint: {last} ({record['epoch'] + 1} epochs)")
    if improved:
        checkpoint.save_atomic(state, os.path.join(out_dir, "best.pth"))


def append_line(path: str, line: str) -> int:
    """Append `line` to the text file at `path`, flushed to disk; returns the file's size before. A failed
    write is taken back (the file truncated to its old size) and raised as cli.WriteError naming `path`."""
    size = os.path.getsize(path) if os.path.exists(path) else 0
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        _truncate(path, size)
        raise_write_error(path, e, f"{os.path.basename(path)} is kept as it was")
        raise
    return size


def _truncate(path: str, size: int) -> None:
    try:
        os.truncate(path, size)
    except OSError:
        pass   # the next resume sets the line aside (set_aside_later_epochs)


def replace_previous_run(out_dir: str, log=print) -> list:
    """--overwrite: remove the run's checkpoints and TensorBoard events, keep its log.txt as
    log.previous.txt, and say so. Returns what was removed or moved."""
    removed = [os.path.join(out_dir, n) for n in ("last.pth", "best.pth") if os.path.isfile(os.path.join(out_dir, n))]
    events = sorted(glob.glob(os.path.join(glob.escape(out_dir), "tensorboard", "events.out.tfevents.*")))
    for path in removed + events:
        os.remove(path)
    said = [os.path.basename(p) for p in removed] + ([f"{len(events)} TensorBoard event file(s)"] if events else [])
    log_path = os.path.join(out_dir, "log.txt")
    moved = []
    if os.path.isfile(log_path):
        previous = os.path.join(out_dir, "log.previous.txt")
        older = os.path.isfile(previous)
        os.replace(log_path, previous)
        moved.append(log_path)
        said.append("log.txt kept as log.previous.txt" + (" (replacing the older log.previous.txt)" if older else ""))
    log(f"--overwrite: replaced the run in {out_dir}: " + ("; ".join(said) if said else "there was none"))
    return removed + events + moved
