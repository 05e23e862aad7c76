"""The README and docs/ stay in step with the repository: links resolve, every page is reachable from
the README, and every file path or module name they mention exists (so moving a file cannot leave a
stale path behind). Text only: no imports of the package, no network."""
import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = os.path.join(ROOT, "docs")
PAGES = sorted(os.path.join(DOCS, name) for name in os.listdir(DOCS) if name.endswith(".md"))
MARKDOWN = [README] + PAGES
# Shell scripts next to the pictures run from the repository root, so their paths are checked too.
SCRIPTS = [os.path.join(DOCS, "images", "regenerate.sh")]

README_MAX_LINES = 220

# [text](target) and ![alt](target), with an optional "title" after the target.
LINK = re.compile(r'!?\[[^\]]*\]\(\s*([^)\s]+)(?:\s+"[^"]*")?\s*\)')
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
# A repository path starts a word: `rtdetr_pytorch/tools/export_onnx.py` (another project's file)
# is not one of ours, `tools/benchmark.py` is.
REPO_PATH = re.compile(r"(?<![\w./{}-])((?:rtdetr_fine|tests|configs|tools|docs)/[\w./{},-]*)(::\w+)?")
MODULE_NAME = re.compile(r"(?<![\w./])rtdetr_fine(?:\.\w+)+")
BRACES = re.compile(r"\{([^{}]*)\}")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def rel(path):
    return os.path.relpath(path, ROOT)


def links(path):
    """Link targets outside code (code spans hold Python such as `x[i](y)`, not links)."""
    prose = INLINE_CODE.sub("", FENCE.sub("", read(path)))
    return LINK.findall(prose)


def local_target(page, target):
    """The file a relative link points to, or None for web links and in-page anchors."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):      # http:, https:, mailto:
        return None
    target = target.split("#", 1)[0]
    if not target:
        return None
    return os.path.normpath(os.path.join(os.path.dirname(page), target))


def expand_braces(text):
    """`a_{x,y}.yml` -> [`a_x.yml`, `a_y.yml`], as the shell expands it."""
    match = BRACES.search(text)
    if not match:
        return [text]
    head, tail = text[:match.start()], text[match.end():]
    return [out for part in match.group(1).split(",") for out in expand_braces(head + part + tail)]


def repo_paths(path):
    """(path, test name or None) for every repository path the file mentions."""
    for match in REPO_PATH.finditer(read(path)):
        written = match.group(1).rstrip(".,")          # a path that ends a sentence
        test = match.group(2)[2:] if match.group(2) else None
        for one in expand_braces(written):
            yield one, test


def top_level_names(module_file):
    """Names a module defines or imports at its top level (what `module.name` can refer to)."""
    tree = ast.parse(read(module_file))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def module_name_problem(dotted):
    """Why `rtdetr_fine.a.b` names nothing in the source tree, or None.

    Resolved from the files, not by importing: the package keeps aliases for its old module paths,
    so an import would accept a name that the docs should no longer use.
    """
    parts = dotted.split(".")
    folder = os.path.join(ROOT, parts[0])
    module = os.path.join(folder, "__init__.py")
    for i, part in enumerate(parts[1:], start=1):
        if os.path.isfile(os.path.join(folder, part, "__init__.py")):
            folder = os.path.join(folder, part)
            module = os.path.join(folder, "__init__.py")
            continue
        if os.path.isfile(os.path.join(folder, part + ".py")):
            module = os.path.join(folder, part + ".py")
            if i + 1 < len(parts) and parts[i + 1] not in top_level_names(module):
                return f"{rel(module)} defines no {parts[i + 1]!r}"
            return None
        if part not in top_level_names(module):
            return f"no module or name {part!r} in {rel(module)}"
        return None                                    # further parts are attributes of that object
    return None


def test_readme_is_short():
    lines = len(read(README).splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES}): move detail to docs/"


@pytest.mark.parametrize("page", MARKDOWN, ids=rel)
def test_no_measurement_is_left_open(page):
    """A number still to be measured is written 'TO MEASURE' while work is under way; none may land."""
    open_lines = [i + 1 for i, line in enumerate(read(page).splitlines()) if "TO MEASURE" in line]
    assert not open_lines, f"{rel(page)}: 'TO MEASURE' on lines {open_lines}"


@pytest.mark.parametrize("page", MARKDOWN, ids=rel)
def test_relative_links_resolve(page):
    broken = [t for t in links(page) if (f := local_target(page, t)) is not None and not os.path.exists(f)]
    assert not broken, f"{rel(page)}: links to missing files: {broken}"


def test_every_docs_page_is_linked_from_the_readme():
    """Directly, or from a page the README links to (a topic's sub-page: docs/table2.md from docs/fine.md)."""
    reached, pages = set(), [README]
    while pages:
        page = pages.pop()
        for target in {local_target(page, t) for t in links(page)} - reached - {None}:
            if target.endswith(".md") and os.path.isfile(target):
                reached.add(target)
                pages.append(target)
    orphans = [rel(p) for p in PAGES if os.path.normpath(p) not in reached]
    assert not orphans, f"docs pages the README does not lead to: {orphans}"


def test_every_picture_is_shown_somewhere():
    images = os.path.join(DOCS, "images")
    shown = {local_target(page, t) for page in MARKDOWN for t in links(page)}
    unshown = [name for name in sorted(os.listdir(images))
               if name.endswith(".png") and os.path.join(images, name) not in shown]
    assert not unshown, f"docs/images pictures no page shows: {unshown}"


@pytest.mark.parametrize("page", MARKDOWN + SCRIPTS, ids=rel)
def test_mentioned_repository_paths_exist(page):
    missing = []
    for path, test in repo_paths(page):
        full = os.path.join(ROOT, path)
        if not os.path.exists(full):
            missing.append(path)
        elif test and not re.search(rf"^def {re.escape(test)}\(", read(full), re.MULTILINE):
            missing.append(f"{path}::{test}")
    assert not missing, f"{rel(page)} mentions paths that do not exist: {sorted(set(missing))}"


@pytest.mark.parametrize("page", MARKDOWN, ids=rel)
def test_mentioned_module_names_exist(page):
    problems = {name: p for name in set(MODULE_NAME.findall(read(page))) if (p := module_name_problem(name))}
    assert not problems, f"{rel(page)} names modules or functions that do not exist: {problems}"


def test_the_checks_catch_stale_paths():
    """The old flat layout's names must fail, or the checks above would pass on anything."""
    assert not os.path.exists(os.path.join(ROOT, "rtdetr_fine/fine.py"))
    assert module_name_problem("rtdetr_fine.flops.count_flops") is not None
    assert module_name_problem("rtdetr_fine.evaluation.flops.count_flops") is None
    assert module_name_problem("rtdetr_fine.evaluation.flops.no_such_function") is not None
    assert expand_braces("configs/a_{x,y}.yml") == ["configs/a_x.yml", "configs/a_y.yml"]
    found = [m.group(1) for m in REPO_PATH.finditer("see `rtdetr_pytorch/tools/export_onnx.py` and tools/plot_log.py.")]
    assert found == ["tools/plot_log.py."]
