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
