"""Hostile configs (issue 25): bounded YAML reading, range rules of size-like keys, consistency rules.
Each error is a ConfigError naming the key (and the file or override); none hangs or overflows."""
import threading

import pytest
from helpers import config_path

import rtdetr_fine
from rtdetr_fine.config import MAX_YAML_DEPTH, MAX_YAML_VALUES, ConfigError


def config_error_within(seconds, path, overrides=()):
    """The ConfigError load_config raises, which must come within `seconds` (run in a daemon thread, so a
    hang fails the test instead of stalling the suite)."""
    outcome = []

    def load():
        try:
            rtdetr_fine.load_config(str(path), list(overrides))
            outcome.append(None)
        except ConfigError as e:
            outcome.append(e)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(seconds)
    assert outcome, f"load_config did not return within {seconds} s"
    assert outcome[0] is not None, "load_config accepted the config"
    return str(outcome[0])


def billion_laughs(levels=9, width=10):
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("levels,width", [(9, 10), (30, 2)])
def test_an_alias_bomb_is_refused_in_seconds(tmp_path, levels, width):
    path = tmp_path / "bomb.yml"
    path.write_text(billion_laughs(levels, width))
    message = config_error_within(30, path)
    assert "bomb.yml" in message and f"more than the {MAX_YAML_VALUES}" in message
    assert f"key 'a{levels}'" in message


def test_an_alias_bomb_in_an_override_names_the_override():
    bomb = "fine={a: &a [x, x, x, x, x, x, x, x], b: &b [*a, *a, *a, *a, *a, *a, *a, *a], " \
           "c: &c [*b, *b, *b, *b, *b, *b, *b, *b], d: &d [*c, *c, *c, *c, *c, *c, *c, *c], " \
           "e: [*d, *d, *d, *d, *d, *d, *d, *d]}"
    message = config_error_within(30, config_path("rtdetr_r18.yml"), [bomb])
    assert message.startswith("override 'fine=") and "expands (through its YAML aliases)" in message


def test_aliases_within_bounds_still_work(tmp_path):
    path = tmp_path / "ok.yml"
    path.write_text(f"__include__: {config_path('rtdetr_r18.yml')}\n"
                    "train_dataloader: {image_size: &size 320, multi_scale: [*size, 352]}\n"
                    "val_dataloader: {image_size: *size}\n")
    cfg = rtdetr_fine.load_config(str(path))
    assert cfg["val_dataloader"]["image_size"] == 320 and cfg["train_dataloader"]["multi_scale"] == [320, 352]


@pytest.mark.parametrize("text,key", [
    ("fine: &f {attention: *f}\n", "fine.attention"),
    ("optimizer:\n  params: &p [{params: backbone}, *p]\n", r"optimizer.params\[1\]"),
])
def test_a_self_referencing_value_names_its_key(tmp_path, text, key):
    path = tmp_path / "self.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"self\.yml: key '{key}' refers to itself"):
        rtdetr_fine.load_config(str(path))


def test_a_self_referencing_override_names_its_key():
    with pytest.raises(ConfigError, match=r"override 'fine=.*key 'fine\.attention' refers to itself"):
        rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), ["fine=&f {attention: *f}"])


@pytest.mark.parametrize("opening,closing", [("{a: ", "}"), ("[", "]"), ("- ", "")])
def test_nesting_thousands_deep_is_refused(tmp_path, opening, closing):
    path = tmp_path / "deep.yml"
    if opening == "- ":   # block style: one more indentation per level
        body = "".join(" " * (2 * i) + "- \n" for i in range(3000)) + " " * 6000 + "- 1\n"
        path.write_text("fine:\n" + body)
    else:
        path.write_text("fine: " + opening * 5000 + "1" + closing * 5000 + "\n")
    with pytest.raises(ConfigError, match=rf"deep\.yml: key 'fine.*' is nested more than {MAX_YAML_DEPTH} levels"):
        rtdetr_fine.load_config(str(path))
