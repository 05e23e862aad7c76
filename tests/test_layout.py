"""The house rules of the package layout (README, "Layout"): which files sit at the top, and that
imports run one way, from the entry points down to the shared layers."""
import ast
import os
import re

from helpers import ROOT

PACKAGE = os.path.join(ROOT, "rtdetr_fine")
TOP_LEVEL = {"__init__", "config", "build", "checkpoint", "cli", "deploy", "predictor", "distributed"}

# A unit may import from units of a lower rank and from itself, never from an equal or higher rank:
# so the two detector families (same rank) never import each other, and a plug-in module never
# imports a family.
RANK = {
    "config": 0, "cli": 0, "distributed": 0,
    "nn": 1, "data": 1, "layouts": 1,
    "modules": 2, "evaluation": 2,
    "rtdetr": 3, "ssd": 3,
    "anydepth": 4,
    "build": 5, "checkpoint": 5,
    "engine": 6, "deploy": 6,
    "predictor": 7,
}
# config.py checks values against constants the model files define (FINE's attention modes, SSD300's
# smallest input, the demo's shapes); it imports them when it validates, not at import time, because
# data/ and engine/ import config. These are the only imports against the rule.
LATE_LOOKUPS = {("config", "modules"), ("config", "ssd"), ("config", "data")}


def modules():
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, PACKAGE)[:-3].split(os.sep)
                yield path, rel


def unit_of(rel_parts):
    return rel_parts[0]


def package_imports(path, rel_parts):
    """(unit imported, line, at module level?) for every import of the package in the file."""
    tree = ast.parse(open(path).read(), path)
    top_level = {id(node) for node in tree.body}
    here = rel_parts[:-1]   # the package the file is in, relative to rtdetr_fine
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                parts = base + (node.module.split(".") if node.module else [])
                targets = [parts] if node.module else [parts + [a.name] for a in node.names]
            elif node.module and node.module.split(".")[0] == "rtdetr_fine":
                parts = node.module.split(".")[1:]
                targets = [parts] if parts else [[a.name] for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name.split(".")[1:] for a in node.names if a.name.split(".")[0] == "rtdetr_fine"]
        for parts in targets:
            if parts:
                yield parts[0], node.lineno, id(node) in top_level


def test_only_the_shared_entry_modules_sit_at_the_top_of_the_package():
    top = {name[:-3] for name in os.listdir(PACKAGE) if name.endswith(".py")}
    assert top == TOP_LEVEL, f"files at the top of rtdetr_fine/ that belong in a folder: {sorted(top - TOP_LEVEL)}"
    folders = {name for name in os.listdir(PACKAGE) if os.path.isdir(os.path.join(PACKAGE, name))
               and name != "__pycache__"}
    assert folders == {u for u in RANK if u not in TOP_LEVEL}


def test_imports_run_one_way():
    wrong = []
    for path, rel in modules():
        unit = unit_of(rel)
        if unit == "__init__":   # the package's front door re-exports (and aliases moved modules)
            continue
        for imported, line, _ in package_imports(path, rel):
            if imported == unit or (unit, imported) in LATE_LOOKUPS:
                continue
            assert imported in RANK, f"{path}:{line} imports rtdetr_fine.{imported}, a unit this test does not know"
            if RANK[imported] >= RANK[unit]:
                wrong.append(f"{os.path.relpath(path, ROOT)}:{line}: {unit} (rank {RANK[unit]}) imports "
                             f"{imported} (rank {RANK[imported]})")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_late_lookups_are_only_inside_functions():
    for path, rel in modules():
        for imported, line, module_level in package_imports(path, rel):
            if (unit_of(rel), imported) in LATE_LOOKUPS:
                assert not module_level, f"{path}:{line}: a module-level import against the layering"


def test_tests_mirror_the_package():
    tests = os.path.join(ROOT, "tests")
    for unit in ("rtdetr", "ssd", "modules", "anydepth", "data", "engine", "evaluation", "layouts"):
        names = os.listdir(os.path.join(tests, unit))
        assert any(re.fullmatch(r"test_\w+\.py", n) for n in names), f"tests/{unit}/ has no tests"


def test_old_import_paths_still_work():
    import importlib

    import rtdetr_fine
    from rtdetr_fine.loaders import build_train_loader   # moved to data/loaders.py
    from rtdetr_fine.fine import FINE                     # moved to modules/fine.py
    assert build_train_loader is rtdetr_fine.data.loaders.build_train_loader
    assert FINE is rtdetr_fine.modules.fine.FINE
    for old, new in rtdetr_fine._MOVED.items():
        assert importlib.import_module(f"rtdetr_fine.{old}") is importlib.import_module(f"rtdetr_fine.{new}")
    assert rtdetr_fine.anydepth.set_depth and rtdetr_fine.checkpoint.load_weights and rtdetr_fine.build.build_training
