import pytest
from helpers import config_path

import rtdetr_fine
from rtdetr_fine.config import ConfigError


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


def test_anydepth_is_off_by_default_and_on_in_its_configs():
    assert rtdetr_fine.load_config(config_path("rtdetr_r50.yml"))["anydepth"] == {
        "enabled": False, "min_decoder_layers": None}
    for name, base, layers in [("rtdetr_r50_anydepth.yml", "rtdetr_r50.yml", 4),
                               ("rtdetr_r18_anydepth.yml", "rtdetr_r18.yml", 2),
                               ("rtdetr_r18_fine_anydepth.yml", "rtdetr_r18_fine.yml", 2)]:
        cfg, ref = rtdetr_fine.load_config(config_path(name)), rtdetr_fine.load_config(config_path(base))
        assert cfg["anydepth"] == {"enabled": True, "min_decoder_layers": layers}
        # the rest is the base config's
        assert {k: v for k, v in cfg.items() if k not in ("anydepth", "output_dir")} == \
            {k: v for k, v in ref.items() if k not in ("anydepth", "output_dir")}
