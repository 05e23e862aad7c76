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


# ---------------------------------------------------------------- hostile inputs (issue 16)

@pytest.fixture(scope="module")
def r50_state(tmp_path_factory):
    """An RT-DETR R50 checkpoint (80 classes), as the official release has it -> its path."""
    from helpers import config_path
    cfg = rtdetr_fine.load_config(config_path("rtdetr_r50.yml"), ["backbone.pretrained=null"])
    path = tmp_path_factory.mktemp("r50") / "rtdetr_r50.pth"
    torch.save({"model": rtdetr_fine.build_model(cfg).state_dict()}, path)
    return str(path)


def test_finetune_from_another_architecture_refuses_and_names_it(small_models, r50_state):
    from rtdetr_fine.checkpoint import CheckpointMismatchError
    _, _, cfg3 = small_models
    torch.manual_seed(2)
    model = rtdetr_fine.build_model(cfg3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as e:
        load_weights(model, r50_state, finetune=True, log=lambda m: None)
    message = str(e.value)
    assert "rtdetr_r50.pth" in message and "looks like RT-DETR R50" in message and "builds        RT-DETR R18" in message
    assert "fine-tuning re-initialises only class heads" in message
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())   # nothing half-loaded
    with pytest.raises(CheckpointMismatchError, match="looks like RT-DETR R50") as e:   # eval / resume: strict
        load_weights(model, r50_state)
    assert not e.value.only_class_heads


def test_finetune_skips_only_class_heads_and_says_so(tmp_path, small_models):
    cfg, src, cfg3 = small_models
    path = tmp_path / "coco.pth"
    torch.save({"model": src.state_dict()}, path)
    said = []
    load_weights(rtdetr_fine.build_model(cfg3), str(path), finetune=True, log=said.append)
    assert len(said) == 1 and "the checkpoint has 80 classes, the model 3" in said[0]
    assert "backbone" not in said[0] and "encoder" not in said[0]


@pytest.mark.parametrize("content, reason", [
    (b"", "is empty (0 bytes)"),
    (b"garbage:" + os.urandom(248), "is not a PyTorch checkpoint"),   # never a torch or safetensors magic
    ("truncated", "truncated or corrupt"),
    ("pickled", "holds a pickled Python object"),
])
def test_unreadable_checkpoints_say_why_in_one_message(tmp_path, content, reason):
    from rtdetr_fine.checkpoint import read_checkpoint
    path = tmp_path / "x.pth"
    if content == "truncated":
        torch.save({"model": {"w": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[:1500])
    elif content == "pickled":
        torch.save({"model": {"w": torch.zeros(2)}, "args": argparse_namespace()}, path)
    else:
        path.write_bytes(content if content[:4] != b"PK\x03\x04" else b"x" + content)
    with pytest.raises((ValueError, OSError)) as e:
        read_checkpoint(str(path))
    message = str(e.value)
    assert str(path) in message and reason in message
    assert "file an issue" not in message and "weights_only=False will likely succeed" not in message
    assert "\n" not in message


def argparse_namespace():
    import argparse
    return argparse.Namespace(lr=1)


def test_stale_save_temporaries_are_removed_and_nothing_else(tmp_path):
    from rtdetr_fine.checkpoint import remove_stale_temporaries
    for name in ("last.pth.ab12cd.tmp", "best.pth.x.tmp", "last.pth", "notes.tmp", "data.json.1.tmp"):
        (tmp_path / name).write_bytes(b"x" * 10)
    said = []
    removed = remove_stale_temporaries(str(tmp_path), said.append)
    assert sorted(os.path.basename(p) for p in removed) == ["best.pth.x.tmp", "last.pth.ab12cd.tmp"]
    assert sorted(os.listdir(tmp_path)) == ["data.json.1.tmp", "last.pth", "notes.tmp"]
    assert len(said) == 2 and "interrupted checkpoint save" in said[0]
