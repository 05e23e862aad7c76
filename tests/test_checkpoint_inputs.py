"""Checkpoints whose values are wrong (issue 25): a number where a tensor belongs, integer weights, NaN/inf
weights. Each is refused naming the file and a tensor, never loaded silently or with a bare traceback."""
import pytest
import torch
from torch import nn

from rtdetr_fine.checkpoint import load_weights


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))   # BatchNorm: an int64 buffer (num_batches_tracked)


def saved(tmp_path, state, name="ck.pth"):
    path = tmp_path / name
    torch.save({"model": state}, path)
    return str(path)


def test_a_good_checkpoint_with_integer_buffers_loads(tmp_path):
    src = tiny_model()
    src[1].num_batches_tracked += 7
    dst = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    assert load_weights(dst, saved(tmp_path, src.state_dict())) == "model"
    assert torch.equal(dst[0].weight, src[0].weight) and int(dst[1].num_batches_tracked) == 7


@pytest.mark.parametrize("value,kind", [(1, "int"), (0.5, "float"), ("w", "str")])
def test_a_number_in_place_of_a_tensor_names_the_entry(tmp_path, value, kind):
    state = dict(tiny_model().state_dict(), **{"0.weight": value})
    with pytest.raises(ValueError, match=rf"checkpoint .*ck\.pth \(model\): 1 entries are not tensors, e\.g\. "
                                         rf"'0\.weight' is a {kind}"):
        load_weights(tiny_model(), saved(tmp_path, state))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_weights_are_refused_not_cast(tmp_path, dtype):
    state = tiny_model().state_dict()
    state["0.weight"] = torch.ones(4, 3, dtype=dtype)
    model = tiny_model()
    before = model[0].weight.clone()
    with pytest.raises(ValueError, match=rf"ck\.pth \(model\): 1 weights are stored as integers .* '0\.weight' is "
                                         rf"{dtype}"):
        load_weights(model, saved(tmp_path, state))
    assert torch.equal(model[0].weight, before)   # nothing loaded


def test_half_precision_weights_still_load(tmp_path):
    src = tiny_model()
    state = {k: v.half() if v.is_floating_point() else v for k, v in src.state_dict().items()}
    dst = tiny_model()
    load_weights(dst, saved(tmp_path, state))
    assert torch.allclose(dst[0].weight, src[0].weight, atol=1e-3)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_name_the_checkpoint(tmp_path, bad):
    state = tiny_model().state_dict()
    state["1.running_var"][2] = bad
    with pytest.raises(ValueError, match=r"checkpoint .*diverged\.pth \(model\): its weights are not finite: 1 "
                                         r"tensors hold NaN or inf values, e\.g\. '1\.running_var'"):
        load_weights(tiny_model(), saved(tmp_path, state, "diverged.pth"))


@pytest.mark.parametrize("content", [5, [torch.zeros(1)], {"model": 5}, {"ema": {"module": 3}, "epoch": 1}])
def test_a_checkpoint_without_a_state_dict_names_the_file(tmp_path, content):
    path = tmp_path / "odd.pth"
    torch.save(content, path)
    with pytest.raises(ValueError, match=rf"^{path}: checkpoint (is not a dict|has neither)"):
        load_weights(tiny_model(), str(path))
