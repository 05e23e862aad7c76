"""`pip install .` gives a working project (issue 24): pyproject.toml declares every package the code
imports, requirements.txt pins them all (plus the test-only ones, which pyproject lists as the `test`
extra), the console commands run the repository's scripts, and every script and tool answers --help
from another folder once installed."""
import ast
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from helpers import ROOT

tomllib = pytest.importorskip("tomllib")   # Python 3.11+

from rtdetr_fine import cli  # noqa: E402

SCRIPTS = ["train.py", "eval.py", "predict.py", "export_onnx.py"]
TOOLS = sorted(f"tools/{n}" for n in os.listdir(os.path.join(ROOT, "tools")) if n.endswith(".py"))
# Imports that are no distribution of their own: the repository's modules (the package, the benchmark's
# pieces next to tools/benchmark.py, the tests' helpers).
OWN_MODULES = {"rtdetr_fine", "benchmarking"}
# Imports the dependencies cannot cover, each with the reason: an extra, or an alternative to a dependency.
NOT_DEPENDENCIES = {"tensorrt": "the trt extra (tools/trt_benchmark.py checks it first)",
                    "onnxsim": "deploy.simplify's fallback when onnxslim (a dependency) is missing"}
# Packages torch loads for an API the code calls (not visible as an import of ours).
IMPLIED = {"torch.utils.tensorboard": ["tensorboard"], "torch.onnx": ["onnx", "onnxscript"]}


def normalized(name: str) -> str:
    """PEP 503's form of a distribution name: lower case, runs of -_. as one '-'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    return normalized(re.split(r"[<>=!~;\[ ]", spec.strip(), maxsplit=1)[0])


def pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def requirements() -> dict:
    """{name: the line's comment} of requirements.txt."""
    found = {}
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        for line in f:
            spec, _, comment = line.partition("#")
            if spec.strip():
                found[requirement_name(spec)] = comment.strip()
    return found


def python_files():
    """Every file of the package, the scripts and the tools (not the tests)."""
    for folder, _, names in os.walk(os.path.join(ROOT, "rtdetr_fine")):
        yield from (os.path.join(folder, n) for n in names if n.endswith(".py"))
    for folder, _, names in os.walk(os.path.join(ROOT, "tools")):
        yield from (os.path.join(folder, n) for n in names if n.endswith(".py"))
    yield from (os.path.join(ROOT, s) for s in SCRIPTS)


def imported_modules(path):
    """Dotted names of the absolute imports anywhere in a file (function-level ones too)."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            yield node.module


def test_pyproject_declares_what_requirements_pin():
    project = pyproject()["project"]
    runtime = {requirement_name(d) for d in project["dependencies"]}
    extras = {name: {requirement_name(d) for d in deps} for name, deps in project["optional-dependencies"].items()}
    pinned = requirements()
    test_only = {name for name, comment in pinned.items() if comment.startswith("tests only")}
    assert test_only == extras["test"] == {"pytest", "transformers"}
    assert set(pinned) - test_only == runtime, "requirements.txt pins exactly pyproject's runtime dependencies"
    assert not runtime & extras["test"] and extras["trt"] == {"tensorrt"}
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        assert all("==" in line for line in f if line.split("#")[0].strip()), "requirements.txt pins every version"


def test_every_imported_package_is_a_dependency():
    runtime = {requirement_name(d) for d in pyproject()["project"]["dependencies"]}
    distributions = importlib.metadata.packages_distributions()
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    own = OWN_MODULES | {os.path.splitext(s)[0] for s in SCRIPTS} | {os.path.splitext(os.path.basename(t))[0]
                                                                    for t in TOOLS}
    needed, unknown = {}, []
    for path in python_files():
        for module in imported_modules(path):
            top = module.split(".")[0]
            names = [n for prefix, implied in IMPLIED.items() if module.startswith(prefix) for n in implied]
            if top in stdlib or top in own or top in NOT_DEPENDENCIES:
                pass
            elif top in distributions:
                names += distributions[top]
            else:
                unknown.append(f"{os.path.relpath(path, ROOT)}: {module}")
            for name in names:
                needed.setdefault(normalized(name), os.path.relpath(path, ROOT))
    assert not unknown, f"imports of packages that are neither installed nor known here: {unknown}"
    missing = {name: where for name, where in needed.items() if name not in runtime}
    assert not missing, f"imported but not in pyproject.toml's dependencies: {missing}"
    assert {"matplotlib", "onnx", "onnxruntime", "av", "tensorboard", "pillow"} <= set(needed)   # the scan sees them


def test_the_wheel_lists_every_package_folder_and_every_command():
    setuptools = pyproject()["tool"]["setuptools"]
    folders = {"rtdetr_fine"} | {f"rtdetr_fine.{n}" for n in os.listdir(os.path.join(ROOT, "rtdetr_fine"))
                                 if os.path.isfile(os.path.join(ROOT, "rtdetr_fine", n, "__init__.py"))}
    assert {p for p in setuptools["packages"] if not p.startswith("rtdetr_fine.scripts")} == folders
    assert setuptools["package-dir"] == {"rtdetr_fine.scripts": ".", "rtdetr_fine.scripts.tools": "tools"}
    scripts = pyproject()["project"]["scripts"]
    assert set(scripts) == set(cli.COMMANDS)
    for command, target in scripts.items():
        attribute = target.split(":commands.")[1]
        assert getattr(cli.commands, attribute).args == (cli.COMMANDS[command],)
    assert sorted(cli.COMMANDS.values()) == sorted(SCRIPTS + [t for t in TOOLS])


def test_a_command_runs_the_script_as_python_does(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["rtdetr-plot-log", "--help"])
    monkeypatch.setattr(sys, "path", list(sys.path))
    with pytest.raises(SystemExit) as e:
        cli.commands.plot_log()
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("usage: plot_log.py [-h]")
    assert cli.script_file("tools/plot_log.py") == os.path.join(ROOT, "tools", "plot_log.py")   # the clone's
    with pytest.raises(FileNotFoundError, match="no_such.py is neither in"):
        cli.script_file("no_such.py")


def test_optional_imports_are_checked_before_the_work():
    cli.require({"os": "os"}, "anything")
    with pytest.raises(ImportError, match=r"--plots needs not-a-package, not installed here: pip install not-a-package"):
        cli.require({"not_a_module_anywhere": "not-a-package"}, "--plots")
    with pytest.raises(ImportError, match=r'pip install "\.\[trt\]"'):
        cli.require({"not_a_module_anywhere": "tensorrt"}, "x", fix='pip install ".[trt]"')


def outside_the_tree(folder, names):
    """What a copy of the repository leaves out: git's data, run outputs and data at the top, caches and builds."""
    top = {".git", "output", "data", "build", "runs"} if os.path.samefile(folder, ROOT) else set()
    return [n for n in names if n in top or n == "__pycache__" or n.endswith(".egg-info")]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv with this repository pip-installed into it (a wheel built from a copy of the tree, as
    `pip install .` builds it). The venv sees this interpreter's packages (--system-site-packages), so
    nothing is downloaded: the dependencies' completeness is test_every_imported_package_is_a_dependency's."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=outside_the_tree)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    proc = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                           str(source)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    shutil.rmtree(source)                    # the installed copy must not need the tree it came from
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    return {"venv": venv, "python": python, "cwd": elsewhere}


def run_in(installed, argv):
    return subprocess.run(argv, capture_output=True, text=True, cwd=installed["cwd"], timeout=900,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})


# Runs each script file given on its command line with --help, as `python FILE --help` runs it (its folder
# first on sys.path), in one process (torch is imported once); prints "FILE EXIT-CODE FIRST-LINE" per file.
HELP_EACH = """
import contextlib, io, os, runpy, sys
for path in sys.argv[1:]:
    saved, out, code = list(sys.path), io.StringIO(), 0
    sys.argv, sys.path[:0] = [path, "--help"], [os.path.dirname(path)]
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(path, run_name="__main__")
    except SystemExit as e:
        code = e.code
    sys.path[:] = saved
    print(path, code, (out.getvalue().splitlines() or [""])[0], flush=True)
"""


def help_lines(installed, paths):
    """{path: (exit code, first line of --help)} of the script files `paths`, run in the venv from another folder."""
    proc = run_in(installed, [installed["python"], "-c", HELP_EACH, *paths])
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line.split(" ", 2) for line in proc.stdout.splitlines() if line.split(" ", 1)[0] in paths]
    return {path: (code, first) for path, code, first in lines}


def assert_helps(found, paths):
    """Every file printed its usage line (argparse: 'usage: NAME [-h] ...') and exited with 0."""
    assert sorted(found) == sorted(paths)
    wrong = {p: found[p] for p in paths if found[p][0] != "0" or
             not found[p][1].startswith(f"usage: {os.path.basename(p)} [-h]")}
    assert not wrong, f"--help failed: {wrong}"


def test_installed_commands_work_from_another_folder(installed):
    """The wheel's copy of every script and tool (rtdetr_fine/scripts/), and two console commands as the user
    runs them."""
    proc = run_in(installed, [installed["python"], "-c", "import json, rtdetr_fine.cli as c; print(json.dumps("
                              "[c.__file__] + [c.script_file(s) for s in c.COMMANDS.values()]))"])
    assert proc.returncode == 0, proc.stderr
    module, *files = json.loads(proc.stdout)
    bundled = os.path.join(os.path.dirname(module), "scripts")
    assert module.startswith(str(installed["venv"])) and all(f.startswith(bundled) for f in files)   # not a clone
    assert os.path.isfile(os.path.join(bundled, "configs", "demo", "rtdetr_r18_fine_shapes.yml"))
    assert_helps(help_lines(installed, files), files)
    for command in ("rtdetr-eval", "rtdetr-benchmark"):
        proc = run_in(installed, [str(installed["venv"] / "bin" / command), "--help"])
        assert proc.returncode == 0, (command, proc.stderr[-2000:])
        assert proc.stdout.startswith(f"usage: {os.path.basename(cli.COMMANDS[command])} [-h]"), proc.stdout[:200]


def test_every_script_and_tool_answers_help_from_another_folder(installed):
    """`python SCRIPT --help` for every script and tool of the clone, with the installed package."""
    paths = [os.path.join(ROOT, s) for s in SCRIPTS + TOOLS]
    assert_helps(help_lines(installed, paths), paths)
