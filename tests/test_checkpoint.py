import os

import pytest
import torch

import rtdetr_fine
from rtdetr_fine.checkpoint import load_weights, save_atomic


@pytest.fixture(scope="module")
def small_models():
    from helpers import config_path
    cfg = rtdetr_fine.load_config(config_path("rtdetr_r18.yml"), ["backbone.pretrained=null"])
    torch.manual_seed(0)
    src = rtdetr_fine.build_model(cfg)
    cfg3 = dict(cfg, num_classes=3)
    return cfg, src, cfg3


@pytest.mark.parametrize("layout", ["ema", "model", "bare"])
def test_each_checkpoint_layout_loads(tmp_path, small_models, layout):
    cfg, src, _ = small_models
    sd = src.state_dict()
    obj = {"ema": {"module": sd, "updates": 5}, "model": {}} if layout == "ema" else \
        {"model": sd, "epoch": 3} if layout == "model" else sd
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    torch.manual_seed(1)
    dst = rtdetr_fine.build_model(cfg)
    which = load_weights(dst, str(path))
    assert which == {"ema": "ema", "model": "model", "bare": "state_dict"}[layout]
    for k, v in dst.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_wrong_num_classes_is_a_clear_error_and_finetune_skips_heads(tmp_path, small_models):
    cfg, src, cfg3 = small_models
    path = tmp_path / "coco.pth"
    torch.save({"model": src.state_dict()}, path)
    dst = rtdetr_fine.build_model(cfg3)
    with pytest.raises(ValueError, match="num_classes"):
        load_weights(dst, str(path))
    messages = []
    load_weights(dst, str(path), finetune=True, log=messages.append)
    assert "dec_score_head" in messages[0] and "denoising_class_embed" in messages[0]
    assert torch.equal(dst.backbone.conv1.conv1_1.conv.weight, src.backbone.conv1.conv1_1.conv.weight)
    assert dst.decoder.enc_score_head.weight.shape == (3, 256)


def test_interrupted_atomic_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = str(tmp_path / "last.pth")
    save_atomic({"epoch": 1, "w": torch.ones(3)}, path)

    def broken_save(obj, f, *a, **k):
        f.write(b"partial garbage")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert os.listdir(tmp_path) == ["last.pth"]   # no temp file left behind


def test_missing_or_corrupt_checkpoint_names_the_file(tmp_path, small_models):
    cfg, _, _ = small_models
    model = rtdetr_fine.build_model(cfg)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_weights(model, str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pth"):
        load_weights(model, str(bad))


def test_canonical_names_map_ddp_and_fine_authors_layouts():
    from rtdetr_fine.checkpoint import canonical_names
    t = torch.zeros(1)
    state = {"module.encoder.sa_cross_attn.1.q_proj.weight": t, "encoder.sa_cross_attn.0.attn_norm.weight": t,
             "decoder.enc_output.0.weight": t}
    assert list(canonical_names(state)) == ["encoder.fine.1.q_proj.weight", "encoder.fine.0.attn_norm.weight",
                                            "decoder.enc_output.0.weight"]
