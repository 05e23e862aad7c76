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


# ----------------------------------------------------------------------------- range rules of size-like keys

@pytest.mark.parametrize("override,message", [
    ("num_classes=1000000000000", "num_classes must be an integer >= 1 and <= 100000 or auto"),
    ("decoder.num_queries=1000000000000", "decoder.num_queries must be an integer >= 1 and <= 10000"),
    ("decoder.num_denoising=1e12", "decoder.num_denoising must be an integer >= 0 and <= 10000"),
    ("encoder.hidden_dim=99999999", "encoder.hidden_dim must be an integer >= 1 and <= 16384"),
    ("train_dataloader.batch_size=100000000", "train_dataloader.batch_size must be an integer >= 1 and <= 4096"),
    ("val_dataloader.num_workers=100000", "val_dataloader.num_workers must be an integer >= 0 and <= 256"),
    ("epochs=10000000000", "epochs must be an integer >= 1 and <= 100000"),
    ("train_dataloader.image_size=65536", "train_dataloader.image_size must be at most 8192 px a side"),
    ("val_dataloader.image_size=[320, 100000]", "val_dataloader.image_size must be at most 8192 px a side"),
    ("train_dataloader.multi_scale=[640, 1000000]", "train_dataloader.multi_scale entry 1000000 must be at most 8192 px"),
    ("demo.num_train=1000000000", "demo.num_train must be an integer >= 1 and <= 100000"),
    ("postprocessor.num_top_queries=1000000000", "postprocessor.num_top_queries must be an integer >= 1 and <= 100000"),
])
def test_size_like_keys_have_finite_bounds(override, message):
    with pytest.raises(ConfigError, match=r"override '.*': " + message.replace("[", r"\[").replace("(", r"\(")):
        rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), [override])


@pytest.mark.parametrize("seed", [2**70, 2**63, -1])
def test_the_seed_must_fit_torch_manual_seed(seed):
    with pytest.raises(ConfigError, match=rf"seed must be an integer >= 0 and <= {2**63 - 1}, got {seed}"):
        rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), [f"seed={seed}"])


def test_the_largest_seed_is_accepted_and_seeds_torch():
    import torch
    cfg = rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), [f"seed={2**63 - 1}"])
    torch.manual_seed(cfg["seed"])   # no overflow


@pytest.mark.parametrize("size,hw", [("[320, 480]", (320, 480)), ("[480, 320]", (480, 320))])
def test_image_size_takes_height_width_as_its_message_says(size, hw):
    import torch
    from PIL import Image

    from rtdetr_fine.data.transforms import build_val_image_transform
    cfg = rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), [f"val_dataloader.image_size={size}",
                                                                    f"train_dataloader.image_size={size}"])
    assert cfg["val_dataloader"]["image_size"] == list(hw)
    image = build_val_image_transform(cfg["val_dataloader"]["image_size"])(Image.new("RGB", (50, 40)))
    assert isinstance(image, torch.Tensor) and tuple(image.shape[-2:]) == hw
    with pytest.raises(ConfigError, match=r"val_dataloader.image_size must be a multiple of 32"):
        rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), ["val_dataloader.image_size=[320, 470]"])


# ----------------------------------------------------------------------------- consistency rules

@pytest.mark.parametrize("strides", ["[64, 32, 16]", "[8, 16, 31]", "[8, 8, 16]", "[0, 16, 32]"])
def test_feat_strides_must_be_increasing_powers_of_two(strides):
    with pytest.raises(ConfigError, match=r"override 'encoder\.feat_strides=.*': encoder\.feat_strides must be "
                                          r"increasing powers of two"):
        rtdetr_fine.load_config(config_path("rtdetr_r18_fine.yml"), [f"encoder.feat_strides={strides}"])


def test_feat_strides_must_match_the_backbone():
    with pytest.raises(ConfigError, match=r"encoder\.feat_strides \[16, 32, 64\] must be the strides of the "
                                          r"backbone's maps: backbone\.return_idx \[1, 2, 3\] returns strides \[8, 16, 32\]"):
        rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), ["encoder.feat_strides=[16, 32, 64]"])
    cfg = rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), [
        "backbone.return_idx=[2, 3]", "encoder.feat_strides=[16, 32]", "encoder.in_channels=[256, 512]",
        "encoder.use_encoder_idx=[1]", "decoder.feat_channels=[256, 256]"])
    assert cfg["encoder"]["feat_strides"] == [16, 32]


@pytest.mark.parametrize("config,overrides,family,keys", [
    ("ssd300.yml", ["decoder.num_queries=100", "postprocessor.num_top_queries=100"], "ssd300",
     "decoder.num_queries, postprocessor.num_top_queries"),
    ("ssd300_cfsam.yml", ["backbone.depth=18"], "ssd300", "backbone.depth"),
    ("rtdetr_r18.yml", ["ssd.nms_thresh=0.3"], "rtdetr", "ssd.nms_thresh"),
])
def test_keys_of_the_other_family_are_refused_naming_them(config, overrides, family, keys):
    owner = "RT-DETR" if family == "ssd300" else "SSD300"
    with pytest.raises(ConfigError, match=rf"detector: {family} does not read the {owner}-only key\(s\) {keys} "):
        rtdetr_fine.load_config(config_path(config), overrides)


def test_keys_of_the_other_family_in_a_file_name_the_file(tmp_path):
    path = tmp_path / "mine.yml"
    path.write_text(f"__include__: {config_path('ssd300.yml')}\ncriterion:\n  alpha: 0.5\n")
    with pytest.raises(ConfigError, match=r"mine\.yml.*criterion\.alpha"):
        rtdetr_fine.load_config(str(path))


def test_an_override_key_deeper_than_a_config_nests_is_refused():
    key = "criterion.weight_dict." + ".".join(["a"] * 3000)
    message = config_error_within(30, config_path("rtdetr_r18.yml"), [f"{key}=1"])
    assert message.startswith("override 'criterion.weight_dict.a.a") and "3002 dotted parts, more than the 32" in message


@pytest.mark.parametrize("pattern,message", [
    ("a{1000000000}", "counted repeats ({m,n}) multiply to 1000000000, more than 10000"),
    ("((a{1000}){1000}){1000}", "multiply to 1000000000"),
    ("x\\\\{100000}", "multiply to 100000"),          # an escaped backslash, then a real repeat
    ("(?:backbone|" + "|".join(f"n{i}" for i in range(300)) + ")", "is a regex of 1402 characters, more than the 1000"),
])
def test_optimizer_regexes_too_big_to_compile_are_refused_before_compiling(pattern, message):
    """The `regex` module unrolls counted repeats when compiling: a{1000000000} took gigabytes."""
    overrides = [f"optimizer.params=[{{params: '{pattern}'}}]"]
    error = config_error_within(30, config_path("rtdetr_r18.yml"), overrides)
    assert "optimizer.params[0].params" in error and message in error


def test_small_counted_repeats_and_escaped_braces_are_fine():
    groups = "[{params: 'backbone{1}'}, {params: 'a\\{1000000000\\}'}, {params: '^(?=.*encoder).{2,300}$'}]"
    cfg = rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), [f"optimizer.params={groups}"])
    assert len(cfg["optimizer"]["params"]) == 3


def test_a_huge_document_stops_being_read_at_the_bound(tmp_path):
    path = tmp_path / "huge.yml"
    path.write_text("train_dataloader:\n  multi_scale: [" + ", ".join(["640"] * 200_000) + "]\n")
    message = config_error_within(30, path)
    assert message.startswith(str(path)) and f"holds more than the {MAX_YAML_VALUES} values" in message
    assert "reading stopped at key 'train_dataloader.multi_scale[" in message


def test_a_chain_of_includes_is_bounded(tmp_path):
    for i in range(2000):
        (tmp_path / f"c{i}.yml").write_text(f"__include__: c{i + 1}.yml\n")
    (tmp_path / "c2000.yml").write_text("epochs: 3\n")
    message = config_error_within(30, tmp_path / "c0.yml")
    assert f"__include__s nested more than {MAX_YAML_DEPTH} files deep" in message and "included from" in message
