"""Paths and runners shared by the tests (imported as `helpers`; conftest.py puts this folder on sys.path)."""
import os
import runpy
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def config_path(name):
    return os.path.join(ROOT, "configs", name)


def run_script(script, argv):
    """Run a top-level script (e.g. "train.py") in this process as `python script argv...` would,
    without importing it as a module. Returns the exit code; a string passed to sys.exit is printed
    to stderr, as the interpreter does."""
    saved = sys.argv
    sys.argv = [script, *map(str, argv)]
    try:
        runpy.run_path(os.path.join(ROOT, script), run_name="__main__")
        return 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    finally:
        sys.argv = saved
