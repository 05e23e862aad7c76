import pytest
from helpers import config_path

import rtdetr_fine
from rtdetr_fine.config import ConfigError, config_files


def test_include_and_overrides():
    cfg = rtdetr_fine.load_config(config_path("rtdetr_r18.yml"),
                                  ["decoder.num_queries=100", "train_dataloader.dataset.img_folder=/x/y", "epochs=3"])
    assert cfg["backbone"]["depth"] == 18                  # from the file
    assert cfg["decoder"]["num_decoder_layers"] == 3
    assert cfg["num_classes"] == 80                        # from the included r50 file
    assert cfg["decoder"]["num_queries"] == 100            # override, parsed as int
    assert cfg["train_dataloader"]["dataset"]["img_folder"] == "/x/y"
    assert cfg["epochs"] == 3


@pytest.mark.parametrize("override,name", [
    ("decoder.num_querys=10", "decoder.num_querys"),
    ("fine.attn=linear", "fine.attn"),
    ("lr=1", "lr"),
])
def test_unknown_key_is_an_error_naming_it(override, name):
    with pytest.raises(ConfigError, match=name.replace(".", r"\.")):
        rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), [override])


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    p = tmp_path / "bad.yml"
    p.write_text(f"__include__: {config_path('rtdetr_r18.yml')}\nencoder:\n  hiden_dim: 128\n")
    with pytest.raises(ConfigError, match=r"bad\.yml.*encoder\.hiden_dim"):
        rtdetr_fine.load_config(str(p))


def test_bad_values_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="fine.attention"):
        rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), ["fine.attention=cubic"])
    with pytest.raises(ConfigError, match="epochs"):
        rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), ["epochs=many"])
    with pytest.raises(ConfigError, match="not found"):
        rtdetr_fine.load_config(str(tmp_path / "missing.yml"))


RECIPE_CONFIGS = ["rtdetr_r18.yml", "rtdetr_r50.yml", "rtdetr_r18_fine.yml", "rtdetr_r50_fine.yml",
                  "ablation/rtdetr_r18_fine_quadratic.yml", "ablation/rtdetr_r18_fine_linear.yml",
                  "ablation/rtdetr_r18_fine_linear_bottleneck.yml",
                  "ablation/rtdetr_r18_fapn.yml", "ablation/rtdetr_r18_adafpn.yml", "ablation/rtdetr_r18_mgc.yml"]


@pytest.mark.parametrize("name", RECIPE_CONFIGS + ["rtdetr_r18_6x.yml", "rtdetr_r50_6x.yml", "rtdetr_r18_fine_6x.yml",
                                                   "rtdetr_r50_fine_6x.yml"])
def test_configs_are_the_official_recipe(name):
    """The FINE authors' RT-DETR runs: the official 72-epoch recipe (1x = its first 12 epochs)."""
    cfg = rtdetr_fine.load_config(config_path(name))
    assert cfg["epochs"] == (72 if "_6x" in name else 12)
    t, o = cfg["train_dataloader"], cfg["optimizer"]
    assert t["total_batch_size"] == 16 and t["batch_size"] is None
    assert t["no_aug_epochs"] == 0 and len(t["multi_scale"]) == 13 and min(t["multi_scale"]) == 480
    assert o["warmup_iters"] == 2000 and o["lr_milestones"] == [] and o["lr"] == 1e-4
    assert o["weight_decay"] == 1e-4 and o["betas"] == [0.9, 0.999] and o["clip_max_norm"] == 0.1
    assert cfg["sync_bn"] is True and cfg["ema"] == {"enabled": True, "decay": 0.9999, "warmups": 2000}
    assert not t["dataset"]["exif_transpose"] and not cfg["val_dataloader"]["dataset"]["exif_transpose"]
    if cfg["fine"]["enabled"]:
        assert cfg["fine"]["num_heads"] == 16 and cfg["fine"]["upsample"] == "bilinear"


@pytest.mark.parametrize("world, expected", [(1, 16), (2, 8), (4, 4), (8, 2), (16, 1)])
def test_total_batch_is_split_over_processes(world, expected):
    from rtdetr_fine.data.loaders import describe_batch, per_process_batch_size
    cfg = rtdetr_fine.load_config(config_path("rtdetr_r18.yml"))
    assert per_process_batch_size(cfg, world) == expected
    assert f"= 16 in total, from train_dataloader.total_batch_size" in describe_batch(cfg, world)


@pytest.mark.parametrize("world", [3, 5, 32])
def test_total_batch_that_does_not_divide_is_an_error(world):
    from rtdetr_fine.data.loaders import per_process_batch_size
    cfg = rtdetr_fine.load_config(config_path("rtdetr_r18.yml"))
    with pytest.raises(ConfigError, match=f"total_batch_size=16 does not divide over {world} processes"):
        per_process_batch_size(cfg, world)


def test_per_process_batch_size_overrides_and_says_so():
    from rtdetr_fine.data.loaders import describe_batch, per_process_batch_size
    cfg = rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), ["train_dataloader.batch_size=6"])
    assert per_process_batch_size(cfg, 3) == 6
    assert describe_batch(cfg, 3).startswith("batch: 6 per process x 3 process(es) = 18 in total")
    assert "total_batch_size 16 not used" in describe_batch(cfg, 3)


@pytest.mark.parametrize("override, key", [("train_dataloader.total_batch_size=0", "total_batch_size"),
                                           ("train_dataloader.batch_size=-2", "train_dataloader.batch_size"),
                                           ("train_dataloader.batch_size=2.5", "train_dataloader.batch_size")])
def test_bad_batch_sizes_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), [override])


@pytest.mark.parametrize("overrides, names", [
    (["cross_layer=cfsam", "fine.enabled=true"], ["cross_layer", "fine.enabled"]),
    (["detector=yolo"], ["detector"]),
    (["detector=ssd300", "fine.enabled=true"], ["fine.enabled", "detector"]),
    (["cross_layer=fine"], ["cross_layer"]),
    (["optimizer.type=Adam"], ["optimizer.type"]),
    (["cfsam.layers=2"], ["cfsam.layers"]),
    (["ssd.nms=0.5"], ["ssd.nms"]),
])
def test_detector_and_cross_layer_errors_name_the_keys(overrides, names):
    with pytest.raises(ConfigError) as e:
        rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), overrides)
    for name in names:
        assert name in str(e.value)


@pytest.mark.parametrize("config, overrides, names", [
    ("rtdetr_r18_fine.yml", ["encoder.alignment=fapn"], ["encoder.alignment: fapn", "fine.enabled",
                                                          "rtdetr_r18_fine.yml"]),
    ("ablation/rtdetr_r18_mgc.yml", ["anydepth.enabled=true"], ["encoder.alignment: mgc", "anydepth.enabled",
                                                                 "rtdetr_r18_mgc.yml"]),
    ("ssd300.yml", ["encoder.alignment=adafpn"], ["encoder.alignment: adafpn", "detector: ssd300"]),
    ("rtdetr_r18.yml", ["encoder.alignment=sni"], ["encoder.alignment", "'fine', 'fapn', 'adafpn', 'mgc'"]),
])
def test_encoder_alignment_errors_name_the_keys_and_files(config, overrides, names):
    with pytest.raises(ConfigError) as e:
        rtdetr_fine.load_config(config_path(config), overrides)
    for name in names:
        assert name in str(e.value)


@pytest.mark.parametrize("overrides", [["encoder.alignment=fine"], ["fine.enabled=true"],
                                       ["fine.enabled=true", "encoder.alignment=fine"]])
def test_encoder_alignment_fine_and_fine_enabled_say_the_same(overrides):
    cfg = rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), overrides)
    assert cfg["fine"]["enabled"] is True and cfg["encoder"]["alignment"] == "fine"
    assert rtdetr_fine.describe_model(cfg) == "RT-DETR R18 + FINE (linear_bottleneck)"


@pytest.mark.parametrize("variant, name", [("fapn", "FaPN"), ("adafpn", "AdaFPN"), ("mgc", "MGC")])
def test_table2_configs_select_their_module(variant, name):
    cfg = rtdetr_fine.load_config(config_path(f"ablation/rtdetr_r18_{variant}.yml"))
    assert cfg["encoder"]["alignment"] == variant and not cfg["fine"]["enabled"] and cfg["epochs"] == 12
    assert rtdetr_fine.describe_model(cfg) == f"RT-DETR R18 + {name}"
    # the authors' AdaFPN and MGC runs used float16 mixed precision (--amp), their FaPN run fp32
    assert cfg["amp"]["dtype"] == ("bfloat16" if variant == "fapn" else "float16")


def test_fine_config_with_cfsam_is_an_error_naming_the_file(tmp_path):
    p = tmp_path / "both.yml"
    p.write_text(f"__include__: {config_path('rtdetr_r18_fine.yml')}\ncross_layer: cfsam\n")
    with pytest.raises(ConfigError, match=r"both\.yml.*cross_layer: cfsam and fine\.enabled"):
        rtdetr_fine.load_config(str(p))


@pytest.mark.parametrize("name, detector, cross_layer, classes, optimizer", [
    ("ssd300.yml", "ssd300", None, 20, "SGD"),
    ("ssd300_cfsam.yml", "ssd300", "cfsam", 20, "SGD"),
    ("ssd300_coco.yml", "ssd300", None, 80, "SGD"),
    ("ssd300_cfsam_coco.yml", "ssd300", "cfsam", 80, "SGD"),
    ("rtdetr_r18_cfsam.yml", "rtdetr", "cfsam", 80, "AdamW"),
    ("demo/ssd300_cfsam_shapes.yml", "ssd300", "cfsam", 3, "AdamW"),
    ("demo/rtdetr_r18_cfsam_shapes.yml", "rtdetr", "cfsam", 3, "AdamW"),
])
def test_cfsam_and_ssd_configs(name, detector, cross_layer, classes, optimizer):
    cfg = rtdetr_fine.load_config(config_path(name))
    assert (cfg["detector"], cfg["cross_layer"], cfg["num_classes"], cfg["optimizer"]["type"]) == \
        (detector, cross_layer, classes, optimizer)
    assert not cfg["fine"]["enabled"]


def test_ssd300_configs_carry_the_cfsam_paper_recipe():
    voc = rtdetr_fine.load_config(config_path("ssd300_cfsam.yml"))
    o = voc["optimizer"]
    assert (o["lr"], o["momentum"], o["weight_decay"], o["lr_milestones"], o["lr_gamma"]) == \
        (1e-3, 0.9, 5e-4, [130, 220], 0.1)
    assert voc["epochs"] == 260 and voc["train_dataloader"]["batch_size"] == 48
    assert voc["train_dataloader"]["image_size"] == voc["val_dataloader"]["image_size"] == 300
    coco = rtdetr_fine.load_config(config_path("ssd300_cfsam_coco.yml"))
    assert coco["epochs"] == 120 and coco["train_dataloader"]["batch_size"] == 16
    assert coco["remap_mscoco_category"] and coco["optimizer"]["lr"] == 1e-3


def test_anydepth_is_off_by_default_and_on_in_its_configs():
    off = rtdetr_fine.load_config(config_path("rtdetr_r50.yml"))["anydepth"]
    assert (off["enabled"], off["min_decoder_layers"]) == (False, None)
    for name, base, layers in [("rtdetr_r50_anydepth.yml", "rtdetr_r50.yml", 4),
                               ("rtdetr_r18_anydepth.yml", "rtdetr_r18.yml", 2),
                               ("rtdetr_r18_fine_anydepth.yml", "rtdetr_r18_fine.yml", 2)]:
        cfg, ref = rtdetr_fine.load_config(config_path(name)), rtdetr_fine.load_config(config_path(base))
        assert {k: cfg["anydepth"][k] for k in ("enabled", "min_decoder_layers", "distill")} == \
            {"enabled": True, "min_decoder_layers": layers, "distill": True}
        # the rest is the base config's
        assert {k: v for k, v in cfg.items() if k not in ("anydepth", "output_dir")} == \
            {k: v for k, v in ref.items() if k not in ("anydepth", "output_dir")}
    with pytest.raises(ConfigError, match="anydepth.enabled: true needs detector: rtdetr"):
        rtdetr_fine.load_config(config_path("ssd300.yml"), ["anydepth.enabled=true"])


# ---------------------------------------------------------------- ranges and types (issue 16)

def test_every_key_has_a_range_rule():
    from rtdetr_fine.config import DEFAULTS, RULES, leaf_keys
    assert sorted(set(leaf_keys(DEFAULTS)) - set(RULES)) == []   # a new key needs its rule in RULES
    assert sorted(set(RULES) - set(leaf_keys(DEFAULTS))) == []


@pytest.mark.parametrize("override, message", [
    ("train_dataloader.image_size=100", "train_dataloader.image_size must be a multiple of 32"),
    ("val_dataloader.image_size=100", "val_dataloader.image_size must be a multiple of 32"),
    ("train_dataloader.multi_scale=[480, 500]", "entry 500"),
    ("epochs=1.5", "epochs must be an integer >= 1"),
    ("epochs=-1", "epochs must be an integer >= 1"),
    ("epochs=0", "epochs must be an integer >= 1"),
    ("optimizer.lr=-1e-4", "optimizer.lr must be a number >= 0"),
    ("optimizer.lr=.nan", "optimizer.lr must be a number >= 0"),
    ("decoder.dropout=1.0", "decoder.dropout must be a number in [0, 1)"),
    ("ema.decay=2", "ema.decay must be a number in [0, 1]"),
    ("train_dataloader.num_workers=-1", "train_dataloader.num_workers must be an integer >= 0"),
    ("decoder.eval_idx=3", "decoder.eval_idx must be a decoder layer index in [-3, 2]"),
    ("encoder.nhead=7", "encoder.hidden_dim=256 must be divisible by encoder.nhead=7"),
    ("fine.enabled=2", "'fine.enabled' expects true or false"),
    ("criterion.weight_dict.loss_focal=1", "unknown loss name(s) ['loss_focal']"),
])
def test_out_of_range_values_name_the_key_and_the_override(override, message):
    with pytest.raises(ConfigError) as e:
        rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), [override])
    assert message in str(e.value)
    assert f"override {override!r}" in str(e.value)          # blamed on the override, not on the file


def test_ssd300_sizes_need_its_minimum_not_multiples_of_32():
    cfg = rtdetr_fine.load_config(config_path("ssd300.yml"), ["val_dataloader.image_size=300"])
    assert cfg["val_dataloader"]["image_size"] == 300
    with pytest.raises(ConfigError, match="at least 268 px for SSD300"):
        rtdetr_fine.load_config(config_path("ssd300.yml"), ["val_dataloader.image_size=200"])


def test_override_of_a_choice_is_blamed_on_the_override_and_bad_file_values_on_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^override 'fine.attention=bogus': fine\.attention must be one of"):
        rtdetr_fine.load_config(config_path("rtdetr_r18_fine.yml"), ["fine.attention=bogus"])
    p = tmp_path / "mine.yml"
    p.write_text(f"__include__: {config_path('rtdetr_r18.yml')}\nepochs: 1.5\n")
    with pytest.raises(ConfigError, match=r"mine\.yml: epochs must be an integer"):
        rtdetr_fine.load_config(str(p))


def test_yaml_1_2_floats_are_numbers_in_overrides_and_files(tmp_path):
    cfg = rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), ["optimizer.lr=1e-4", "optimizer.weight_decay=5E-5"])
    assert cfg["optimizer"]["lr"] == 1e-4 and cfg["optimizer"]["weight_decay"] == 5e-5
    p = tmp_path / "lr.yml"
    p.write_text(f"__include__: {config_path('rtdetr_r18.yml')}\noptimizer:\n  lr: 2e-4\n")
    assert rtdetr_fine.load_config(str(p))["optimizer"]["lr"] == 2e-4


def test_missing_include_names_the_including_file(tmp_path):
    p = tmp_path / "child.yml"
    p.write_text("__include__: ../nowhere/base.yml\nepochs: 2\n")
    with pytest.raises(ConfigError, match=r"config file not found: .*nowhere/base\.yml \(included from .*child\.yml\)"):
        rtdetr_fine.load_config(str(p))


@pytest.mark.parametrize("text, message", [("epochs: [1\n", "not valid YAML"), ("- 1\n- 2\n", "top level must be a mapping"),
                                           ("__include__: 3\n", "__include__ must be a file name")])
def test_malformed_files_are_named(tmp_path, text, message):
    p = tmp_path / "bad.yml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message) as e:
        rtdetr_fine.load_config(str(p))
    assert "bad.yml" in str(e.value)


def test_a_weight_override_keeps_the_other_loss_weights():
    cfg = rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), ["criterion.weight_dict.loss_vfl=2"])
    assert cfg["criterion"]["weight_dict"] == {"loss_vfl": 2.0, "loss_bbox": 5.0, "loss_giou": 2.0}


def test_config_files_lists_the_includes(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "b.yml").write_text("epochs: 2\n")
    (tmp_path / "a.yml").write_text("__include__: [base/b.yml]\n")
    (tmp_path / "c.yml").write_text("__include__: a.yml\nseed: 1\n")
    assert config_files(str(tmp_path / "c.yml")) == [
        ("-c", str(tmp_path / "c.yml")), ("config include", str(tmp_path / "a.yml")),
        ("config include", str(tmp_path / "base" / "b.yml"))]
    assert config_files(None) == []
    (tmp_path / "d.yml").write_text("__include__: [a.yml, base/b.yml]\n")   # b.yml twice: listed once
    assert [f for _, f in config_files(str(tmp_path / "d.yml"))] == [
        str(tmp_path / "d.yml"), str(tmp_path / "a.yml"), str(tmp_path / "base" / "b.yml")]
