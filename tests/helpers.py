"""Paths shared by the tests (imported as `helpers`; conftest.py puts this folder on sys.path)."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def config_path(name):
    return os.path.join(ROOT, "configs", name)
