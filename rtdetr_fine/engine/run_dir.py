"""train.py's output_dir: a run is never replaced silently.

A run folder holds last.pth, best.pth and log.txt (plus config.yml and tensorboard/). A new run
(no -r, or -r from another folder) refuses a folder that holds a run, naming the ways on; with
--overwrite it replaces the run and says what it removed. A resumed run continues in the folder of its
checkpoint unless output_dir is given with -u (resume_folder).
"""
import glob
import os

from ..cli import UserError, check_output_dir
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
    resuming_here = bool(resume) and _same_folder(os.path.dirname(os.path.abspath(resume)), out_dir)
    if overwrite and resuming_here:
        raise UserError(f"--overwrite would delete the run that -r {resume} continues in {out_dir}; "
                        "leave out --overwrite to resume it")
    if found and not resuming_here and not overwrite:
        last = os.path.join(out_dir, "last.pth")
        ways = ([f"continue it with -r {last}"] if "last.pth" in found else []) + [
            "replace it with --overwrite", "or start elsewhere with -u output_dir=OTHER_DIR"]
        raise UserError(f"output_dir {out_dir} already holds a run ({_describe(out_dir, found)}); "
                        f"not starting over it: {', '.join(ways)}")


def outside_run(out_dir: str, resume: str | None, inputs: list) -> list:
    """The inputs [(what, path)] that are not the files of the run resumed in place (-r OUT_DIR/last.pth,
    -c OUT_DIR/config.yml): the output guard (cli.check_outputs_apart) checks those against out_dir."""
    if not resume or not _same_folder(os.path.dirname(os.path.abspath(resume)), out_dir):
        return inputs
    return [(what, path) for what, path in inputs
            if not path or not _same_folder(os.path.dirname(os.path.abspath(path)), out_dir)]


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
