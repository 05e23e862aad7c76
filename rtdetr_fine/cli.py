"""The command-line boundary of train.py, eval.py, export_onnx.py, predict.py and tools/*.py.

Each entry point ends with `sys.exit(cli.run_main(main))`. What reaches the user:

  * a user error (bad config value, data, checkpoint, path; package code raises ValueError,
    OSError and their subclasses with messages naming the file / key): `PROG: error: MESSAGE`
    on stderr, exit code 1;
  * an error raised inside a DataLoader worker: the same, with the worker's own message (torch
    wraps it in "Caught X in DataLoader worker process N. Original Traceback ...");
  * Ctrl-C (also when it lands inside a save and torch raises its own error on the way out):
    `PROG: interrupted; STATUS` (e.g. the last complete checkpoint), exit code 130;
  * a programming error: Python's traceback, as always. RTDETR_TRACEBACK=1 in the environment
    shows the traceback of user errors too.

Output paths are checked before any work starts (check_output_file / check_output_dir), so a
typo in `-o` fails in a second, not after an hour of evaluation; so are the packages a command needs
for only part of its work (require).

`pip install .` also installs the command lines as console commands (COMMANDS: rtdetr-train, rtdetr-eval,
...); each runs the repository's script itself, as `python train.py` does in a clone (run_script_file).
"""
from __future__ import annotations

import os
import re
import runpy
import sys
import tempfile
from functools import partial
from types import SimpleNamespace
from typing import Callable

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130   # the shell's convention for SIGINT

_status = None   # what an interruption leaves behind, set by the running entry point (see set_status)


class UserError(Exception):
    """A user-facing failure of a command line (bad argument, missing input): printed as one line."""


class WriteError(OSError):
    """A save that failed (disk full, I/O error): its message names the file, the OS error and what is
    left (e.g. the previous checkpoint); errno and strerror are the OS error's."""

    def __init__(self, path: str, error: OSError, left: str = ""):
        super().__init__(error.errno, error.strerror or str(error))
        self.filename = path
        self.message = f"cannot write {path}: {self.strerror}" + (f"; {left}" if left else "")

    def __str__(self):
        return self.message


def os_error_in(error: BaseException) -> OSError | None:
    """The OSError behind a failed write: the error itself, or the one in its chain (torch.save's zip
    writer turns the disk's "No space left on device" into its own RuntimeError "unexpected pos");
    None when there is none, or when a KeyboardInterrupt caused it (that stays an interruption)."""
    return None if _caused_by_interrupt(error) else _in_chain(error, OSError)


class NonFiniteLossError(RuntimeError):
    """Training stopped on a NaN/inf loss (engine/loops.py): a user-facing failure, named by iteration."""


def set_status(text: str | None) -> None:
    """What `PROG: interrupted; ...` says if Ctrl-C comes now (e.g. train.py's last complete checkpoint)."""
    global _status
    _status = text


def run_main(main: Callable, argv=None, prog: str | None = None) -> int:
    """Call main(argv) behind the boundary described above; returns the exit code (main's own if it
    returns an int, else 0). SystemExit passes through unchanged."""
    prog = prog or os.path.basename(sys.argv[0] or "rtdetr_fine")
    set_status(None)
    try:
        result = main(argv)
    except KeyboardInterrupt:
        return _interrupted(prog)
    except Exception as e:  # noqa: BLE001 - sorted below: user errors become one line, the rest re-raised
        if _caused_by_interrupt(e):
            return _interrupted(prog)
        message = user_message(e)
        if message is None or os.environ.get("RTDETR_TRACEBACK"):
            raise
        _close_progress_bars()
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def _close_progress_bars() -> None:
    """End an open tqdm bar's line, so the message starts on a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()


def _interrupted(prog: str) -> int:
    _close_progress_bars()
    print(f"{prog}: interrupted" + (f"; {_status}" if _status else ""), file=sys.stderr, flush=True)
    return EXIT_INTERRUPTED


def _caused_by_interrupt(error: BaseException) -> bool:
    """True when a KeyboardInterrupt is in the exception's chain (e.g. torch.save's writer raising
    its own RuntimeError while a Ctrl-C unwinds through it, or a DataLoader worker killed by it)."""
    return _in_chain(error, KeyboardInterrupt) is not None


def _in_chain(error: BaseException, kind: type):
    """The first exception of type `kind` in `error`'s chain (itself, its cause or context, ...), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def user_message(error: BaseException) -> str | None:
    """The one-message form of a user error, or None for a programming error (keeps its traceback)."""
    import torch
    wrapped = _worker_exception_name(str(error)) is not None
    text = unwrap_worker_error(str(error))
    if isinstance(error, torch.OutOfMemoryError):
        first = text.splitlines()[0] if text else "out of memory"
        return (f"{first} -- lower train_dataloader.batch_size / val_dataloader.batch_size, the image size, "
                "or use --amp on CUDA")
    if isinstance(error, RuntimeError) and not isinstance(error, NonFiniteLossError):
        if _peer_failure(error, text):
            return (f"another process of the distributed run ended or stopped answering ({text.splitlines()[0][:200]}); "
                    "its own message says why" + (f"; {_status}" if _status else ""))
        if re.match(r"DataLoader worker \(pid", text):
            return (f"{text.splitlines()[0]} (the machine may be out of memory, or a worker crashed: rerun "
                    "with -u train_dataloader.num_workers=0 val_dataloader.num_workers=0 to see the error)")
        if wrapped:   # a worker's user error that torch could not re-raise as its own type
            return text if _worker_exception_name(str(error)) in _USER_ERROR_NAMES else None
        return None
    if isinstance(error, (UserError, ValueError, OSError, ImportError, NonFiniteLossError)):
        return text or type(error).__name__
    return None


_PEER_FAILURE = re.compile(r"Connection (closed|reset) by peer|remote (worker|process)|Timed out waiting|"
                           r"timed out|NCCL communicator was aborted|ProcessGroupNCCL.*(Watchdog|timeout)")


def _peer_failure(error: BaseException, text: str) -> bool:
    """A collective of torch.distributed failed because another process died or hangs (gloo / NCCL)."""
    import torch.distributed as dist
    backend_error = isinstance(error, getattr(dist, "DistError", ()))
    return bool(_PEER_FAILURE.search(text)) and (backend_error or "gloo" in text or "NCCL" in text or "c10d" in text)


_USER_ERROR_NAMES = {"ValueError", "OSError", "FileNotFoundError", "PermissionError", "IsADirectoryError",
                     "NotADirectoryError", "CocoFormatError", "ConfigError", "DataPathError", "UnicodeDecodeError"}


def _worker_exception_name(text: str) -> str | None:
    match = re.match(r"Caught (\w+) in DataLoader worker process", text)
    return match.group(1) if match else None


def unwrap_worker_error(text: str) -> str:
    """torch's "Caught X in DataLoader worker process N.\\nOriginal Traceback ...\\nX: message"
    -> "message" (the worker's own, which names the image / annotation); other text unchanged."""
    if _worker_exception_name(text) is None or "Original Traceback" not in text:
        return text
    lines = text.rstrip("\n").splitlines()
    last_tb = max(i for i, line in enumerate(lines) if line.endswith("Traceback (most recent call last):"))
    for i in range(last_tb + 1, len(lines)):
        line = lines[i]
        if line and not line[0].isspace():   # frames are indented; the exception line is not
            head, sep, rest = line.partition(": ")
            first = rest if sep and re.fullmatch(r"[\w.]+", head) else line
            return "\n".join([first, *lines[i + 1:]])
    return text


def require(modules: dict, purpose: str, fix: str | None = None) -> None:
    """Fail now, before any work, unless every module of `modules` ({import name: pip package}) can be
    imported: an ImportError that names `purpose` and the command that fixes it (default: pip install
    the missing packages). For dependencies a command needs only for some of its work."""
    import importlib.util
    missing = [package for name, package in modules.items() if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"{purpose} needs {', '.join(missing)}, not installed here: "
                          + (fix or f"pip install {' '.join(missing)}"))


# ---------------------------------------------------------------- output paths, checked before work

def check_output_file(path: str, what: str = "output file") -> str:
    """Fail now (OSError naming `path`) unless a file can be written at `path`: not a directory,
    its folder is a folder (or can be made in one) and writable, an existing file is writable.
    Creates nothing. Returns the path."""
    if not path or path.endswith(("/", os.sep)) or os.path.isdir(path):
        raise IsADirectoryError(f"{what} {path!r} is a directory; give a file name inside it")
    if os.path.lexists(path):
        if not os.path.isfile(path) and not os.path.exists(path):
            raise OSError(f"{what} {path}: a broken symbolic link")
        if os.path.isfile(path) and not os.access(path, os.W_OK):
            raise PermissionError(f"cannot write {what} {path}: the file is read-only")
    _check_creatable_folder(os.path.dirname(os.path.abspath(path)), f"{what} {path}")
    return path


def check_output_dir(path: str, what: str = "output folder") -> str:
    """Fail now (OSError naming `path`) unless `path` is, or can be created as, a writable folder.
    Creates nothing. Returns the path."""
    if not path:
        raise ValueError(f"{what}: empty path")
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"{what} {path} is a file, not a folder")
    _check_creatable_folder(os.path.abspath(path), f"{what} {path}")
    return path


def _check_creatable_folder(folder: str, what: str) -> None:
    """The nearest existing ancestor of `folder` must be a folder we can create files in."""
    existing = folder
    while not os.path.exists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        raise NotADirectoryError(f"cannot write {what}: {existing} is a file, not a folder")
    try:   # a real probe: os.access says yes to root on read-only mounts and /sys
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise PermissionError(f"cannot write {what}: folder {existing} is not writable "
                              f"({e.strerror or e})") from None


def check_outputs_apart(outputs, inputs) -> None:
    """The output guard every command calls once, before any work: no output path (file or folder)
    may be, contain or lie inside one of the command's inputs (config and its includes, checkpoint,
    annotation files, image folders, input images and videos), compared after resolving links.
    outputs, inputs: [(flag or key, path)]; empty paths are skipped. A UserError names both paths."""
    inputs = [(what, path, os.path.realpath(path)) for what, path in inputs if path]
    for out_what, out in outputs:
        if not out:
            continue
        real_out = os.path.realpath(out)
        for in_what, given, real_in in inputs:
            if real_out == real_in:
                relation = "is"
            elif _inside(real_in, real_out):
                relation = "contains"
            elif _inside(real_out, real_in):
                relation = "lies inside"
            else:
                continue
            resolved = f" ({real_in})" if real_in != os.path.abspath(given) else ""
            raise UserError(f"{out_what} {out} {relation} the input {in_what} {given}{resolved}: writing there "
                            f"could overwrite what the command reads; give {out_what} a path outside its inputs")


def _inside(path: str, folder: str) -> bool:
    """True when `path` lies strictly inside `folder` (both resolved, absolute)."""
    return path != folder and os.path.commonpath([path, folder]) == folder


def prepare_output_file(path: str, what: str = "output file") -> str:
    """check_output_file, then create the file's folder (for writing right away)."""
    check_output_file(path, what)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return path


def write_text_atomic(path: str, text: str) -> None:
    """Write `text` to a temp file next to `path`, then rename it over `path`: an interrupted or
    failed write leaves the previous file (or none), never a half-written one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise_write_error(path, e)
        raise


def raise_write_error(path: str, error: BaseException, left: str | None = None) -> None:
    """Inside an except block of a failed save of `path`: raise a WriteError naming `path`, the OS error
    and what is left (default: the previous file, when there is one) if an OSError caused `error`;
    return (the caller re-raises `error`) otherwise."""
    cause = os_error_in(error)
    if cause is None or isinstance(error, WriteError):
        return
    if left is None:
        left = (f"the previous {os.path.basename(path)} is kept" if os.path.exists(path) else "nothing was written") \
            + "; the temporary file was removed"
    raise WriteError(path, cause, left) from None


# ---------------------------------------------------------------- console commands (pip install)

# pyproject.toml's [project.scripts]: command -> the repository script it runs (relative to the repository).
# A wheel carries the scripts, tools/ and configs/ in rtdetr_fine/scripts/ (pyproject.toml maps them
# there); in a clone, or an editable install of one, they sit next to the package.
COMMANDS = {
    "rtdetr-train": "train.py", "rtdetr-eval": "eval.py", "rtdetr-predict": "predict.py",
    "rtdetr-export-onnx": "export_onnx.py", "rtdetr-benchmark": "tools/benchmark.py",
    "rtdetr-trt-benchmark": "tools/trt_benchmark.py", "rtdetr-cfsam-cost": "tools/cfsam_cost.py",
    "rtdetr-voc-to-coco": "tools/voc_to_coco.py", "rtdetr-visualize-fine": "tools/visualize_fine.py",
    "rtdetr-plot-log": "tools/plot_log.py",
}


def script_file(relative: str) -> str:
    """The file of a repository script (e.g. 'tools/benchmark.py'): the installed copy in
    rtdetr_fine/scripts/, else the clone's next to the package. FileNotFoundError names both places."""
    package = os.path.dirname(os.path.abspath(__file__))
    places = [os.path.join(package, "scripts"), os.path.dirname(package)]
    for root in places:
        path = os.path.join(root, relative)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{relative} is neither in {places[0]} (a pip install's copy) nor in {places[1]} "
                            "(a clone): reinstall the package (pip install .) from a clone of the repository")


def run_script_file(relative: str, argv=None) -> int:
    """Run a repository script as `python SCRIPT ARGV...` runs it: as __main__, its folder first on
    sys.path, sys.argv[0] its path (so its usage line names it). ARGV defaults to this process's
    arguments. The script's sys.exit code passes through; 0 when it returns."""
    path = script_file(relative)
    sys.argv = [path, *(sys.argv[1:] if argv is None else argv)]
    sys.path.insert(0, os.path.dirname(path))
    runpy.run_path(path, run_name="__main__")
    return 0


# The console commands themselves, one attribute per command: commands.train runs train.py, commands.eval
# eval.py, ... (pyproject.toml: rtdetr-train = "rtdetr_fine.cli:commands.train").
commands = SimpleNamespace(**{name[len("rtdetr-"):].replace("-", "_"): partial(run_script_file, relative)
                              for name, relative in COMMANDS.items()})
