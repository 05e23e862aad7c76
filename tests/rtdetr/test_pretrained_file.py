"""backbone.pretrained given a file that is not a weights file (issue 25): one message naming the key and the
file, for both families' loaders (rtdetr_fine/nn/pretrained.py), never a torch.load traceback."""
import os
import pickle
import re

import pytest
import torch

from rtdetr_fine.rtdetr.backbone import PResNet, load_pretrained_backbone
from rtdetr_fine.ssd.pretrained import read_state_dict


class Payload:
    """A pickle that would run a command when unpickled unsafely."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def hostile_files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("these are not weights\n")
    payload = tmp_path / "payload.pth"
    torch.save({"model": Payload()}, payload)
    raw_pickle = tmp_path / "raw.pkl"
    raw_pickle.write_bytes(pickle.dumps(Payload()))
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.pth"
    torch.save({"w": torch.zeros(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    numbers = tmp_path / "numbers.pth"
    torch.save({"model": {"conv.weight": 3}}, numbers)
    folder = tmp_path / "weights_dir"
    folder.mkdir()
    return {
        "text": (text, r"not a PyTorch weights file \(torch.save writes a zip archive; this file starts with b.thes.\)"),
        "payload": (payload, r"pickled Python object \(posix\.system\)"),
        "raw pickle": (raw_pickle, r"weights-only loading refuses what it holds \(Unsupported operand"),
        "empty": (empty, r"is empty \(0 bytes\)"),
        "truncated": (truncated, r"not a complete PyTorch weights file"),
        "numbers": (numbers, r"is not a state dict"),
        "directory": (folder, r"is a directory"),
        "missing": (tmp_path / "absent.pth", r"no such file"),
    }


CASES = ["text", "payload", "raw pickle", "empty", "truncated", "numbers", "directory", "missing"]


@pytest.mark.parametrize("case", CASES)
def test_rtdetr_backbone_pretrained_names_the_key_and_file(tmp_path, case, capfd):
    path, reason = hostile_files(tmp_path)[case]
    with pytest.raises((ValueError, OSError), match=r"^backbone\.pretrained") as info:
        load_pretrained_backbone(PResNet(depth=18), str(path), 18)
    assert os.path.basename(str(path)) in str(info.value)
    assert re.search(reason, str(info.value)), str(info.value)
    assert "pwned" not in capfd.readouterr().out   # nothing was executed


@pytest.mark.parametrize("case", ["text", "payload", "directory"])
def test_ssd_backbone_pretrained_names_the_key_and_file(tmp_path, case):
    path, reason = hostile_files(tmp_path)[case]
    with pytest.raises((ValueError, OSError), match=rf"^backbone\.pretrained.*{path.name}"):
        read_state_dict(str(path))


def test_a_good_file_still_loads(tmp_path):
    torch.manual_seed(0)
    source = PResNet(depth=18)
    path = tmp_path / "r18.pth"
    torch.save({"model": source.state_dict()}, path)
    target = load_pretrained_backbone(PResNet(depth=18), str(path), 18)
    assert torch.equal(target.conv1.conv1_1.conv.weight, source.conv1.conv1_1.conv.weight)


@pytest.mark.parametrize("damage,reason", [
    (lambda w: w.round().to(torch.int64), r"1 weights are stored as integers where the backbone has floating-point "
                                          r"weights, e.g. 'conv1\.conv1_1\.conv\.weight' is torch\.int64"),
    (lambda w: w.index_fill(0, torch.tensor([0]), float("nan")), r"1 weights hold NaN or inf values, e\.g\. "
                                                                  r"'conv1\.conv1_1\.conv\.weight'")])
def test_integer_or_non_finite_weights_are_refused_not_cast(tmp_path, damage, reason):
    """An integer tensor where the backbone keeps floats would be cast silently by load_state_dict, a NaN would
    train a NaN model: both refused, naming the key, the file and the tensor (the integer BatchNorm counters of
    a normal file pass)."""
    state = PResNet(depth=18).state_dict()
    assert any(not v.is_floating_point() for v in state.values())     # num_batches_tracked: int64, fine
    state["conv1.conv1_1.conv.weight"] = damage(state["conv1.conv1_1.conv.weight"])
    path = tmp_path / "r18.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=rf"^backbone\.pretrained: .*r18\.pth: {reason}"):
        load_pretrained_backbone(PResNet(depth=18), str(path), 18)


def test_ssd_refuses_integer_vgg_weights(tmp_path):
    from rtdetr_fine.ssd.model import build_torchvision_ssd300
    convs = [m for m in build_torchvision_ssd300(3).backbone.modules() if isinstance(m, torch.nn.Conv2d)][:13]
    indices = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]                  # torchvision vgg16's conv indices
    state = {f"features.{i}.{p}": getattr(c, p).detach().clone() for i, c in zip(indices, convs) for p in ("weight", "bias")}
    path = tmp_path / "vgg.pth"
    torch.save(state, path)
    build_torchvision_ssd300(3, str(path), "random")                              # the intact file loads
    state["features.0.bias"] = state["features.0.bias"].to(torch.int32)
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"^backbone\.pretrained: .*vgg\.pth: 1 weights are stored as integers .* "
                                         r"'features\.0\.bias' is torch\.int32"):
        build_torchvision_ssd300(3, str(path), "random")
