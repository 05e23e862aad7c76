"""Tests for the FINE module (rtdetr_fine/modules/fine.py)."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rtdetr_fine.modules.fine import (ATTENTION_MODES, FINE, MODULATIONS, RMSNorm, flatten_tokens, l1_kernel,
                              linear_attention, position_embedding, softmax_attention)

C = 256


def rtdetr_pair(attention, **kwargs):
    """The two FINE modules of RT-DETR: P4 refined by F5 and P3 refined by F4."""
    bottleneck = attention == "linear_bottleneck"
    p4_module = FINE(C, C, attention=attention, low_pool=2 if bottleneck else 1, high_pool=1, **kwargs)
    p3_module = FINE(C, C, attention=attention, low_pool=4 if bottleneck else 1,
                     high_pool=2 if bottleneck else 1, **kwargs)
    return p4_module, p3_module


def num_params(*modules):
    return sum(p.numel() for m in modules for p in m.parameters())


# ----------------------------------------------------------------------------- parameters

@pytest.mark.parametrize("attention, expected", [("linear_bottleneck", 1_579_552),
                                                 ("linear", 1_579_552),
                                                 ("quadratic", 1_579_520)])
def test_two_module_param_count(attention, expected):
    """Projections 4 x 65,792, FFN 525,568, LayerNorms 1,024 per module; + RMSNorm 16 when linear.
    The quadratic pair's 1,579,520 is what the authors' quadratic RT-DETR log prints (21,763,984 in all)."""
    assert num_params(*rtdetr_pair(attention)) == expected


def test_rmsnorm_is_per_head_only_in_linear_modes():
    assert FINE(C, C, attention="linear").attn_norm.weight.shape == (C // 16,)
    assert not hasattr(FINE(C, C, attention="quadratic"), "attn_norm")


def test_parameter_names_are_the_authors():
    names = {k.split(".")[0] for k in FINE(C, C).state_dict()}
    assert names == {"q_proj", "k_proj", "v_proj", "out_proj", "attn_norm", "linear1", "linear2", "norm1", "norm2"}


def test_high_level_channels_projected_by_1x1_conv():
    module = FINE(C, 512)
    assert isinstance(module.high_proj, nn.Conv2d) and module.high_proj.kernel_size == (1, 1)
    assert num_params(module) == num_params(FINE(C, C)) + 512 * C + C
    out = module(torch.randn(1, C, 16, 16), torch.randn(1, 512, 8, 8))
    assert out.shape == (1, C, 16, 16)


# ----------------------------------------------------------------------------- attention kernels

def test_l1_kernel_normalises_each_channel_over_tokens():
    x = torch.randn(2, 8, 50, 32, dtype=torch.float64)
    channel_l1 = l1_kernel(x).abs().sum(dim=-2)   # [2, 8, 32]
    torch.testing.assert_close(channel_l1, torch.ones_like(channel_l1))


def test_l1_kernel_divides_by_the_norm_clamped_at_eps():
    """x / max(sum|x|, eps): a channel whose l1 norm is below eps is divided by eps, not by norm + eps."""
    x = torch.zeros(1, 1, 4, 2, dtype=torch.float64)
    x[0, 0, :, 0] = torch.tensor([1.0, -1.0, 2.0, 0.0])          # l1 norm 4
    x[0, 0, :, 1] = torch.tensor([1e-8, 0.0, -1e-8, 0.0])         # l1 norm 2e-8 < eps
    out = l1_kernel(x, eps=1e-6)
    torch.testing.assert_close(out[0, 0, :, 0], x[0, 0, :, 0] / 4)
    torch.testing.assert_close(out[0, 0, :, 1], x[0, 0, :, 1] / 1e-6)


def test_linear_attention_equals_explicit_quadratic_form():
    """phi(Q)(phi(K)^T V) (Eq. 5 order) == (phi(Q) phi(K)^T) V (Eq. 4 order, no Delta)."""
    torch.manual_seed(0)
    q = torch.randn(2, 8, 60, 32, dtype=torch.float64)
    k = torch.randn(2, 8, 24, 32, dtype=torch.float64)
    v = torch.randn(2, 8, 24, 32, dtype=torch.float64)
    eps = 1e-6
    q_hat = q / q.abs().sum(dim=2, keepdim=True).clamp_min(eps)
    k_hat = k / k.abs().sum(dim=2, keepdim=True).clamp_min(eps)
    similarity = q_hat @ k_hat.transpose(-2, -1)            # [2, 8, 60, 24], the O(N_l N_h) matrix
    expected = similarity @ v
    torch.testing.assert_close(linear_attention(q, k, v, eps=eps), expected, rtol=1e-10, atol=1e-10)


def test_softmax_attention_equals_explicit_formula():
    torch.manual_seed(0)
    q = torch.randn(2, 8, 60, 32, dtype=torch.float64)
    k = torch.randn(2, 8, 24, 32, dtype=torch.float64)
    v = torch.randn(2, 8, 24, 32, dtype=torch.float64)
    scores = q @ k.transpose(-2, -1) / math.sqrt(32)
    weights = scores.exp() / scores.exp().sum(dim=-1, keepdim=True)
    torch.testing.assert_close(softmax_attention(q, k, v), weights @ v, rtol=1e-10, atol=1e-10)


def test_quadratic_cross_attention_matches_nn_multihead_attention_with_positions_on_q_k_and_v():
    """Q from P_l + pos(P_l's grid), K and V from F_{l+1} + pos(F_{l+1}'s grid), softmax over keys."""
    torch.manual_seed(0)
    ours = FINE(64, 64, num_heads=8, attention="quadratic").double()
    ref = nn.MultiheadAttention(64, 8, batch_first=True).double()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    low, high = torch.randn(2, 64, 6, 5, dtype=torch.float64), torch.randn(2, 64, 3, 4, dtype=torch.float64)
    query = flatten_tokens(low) + position_embedding(low)
    key = flatten_tokens(high) + position_embedding(high)
    expected, _ = ref(query, key, key, need_weights=False)
    torch.testing.assert_close(ours.cross_attention(low, high), expected, rtol=1e-10, atol=1e-10)


def test_norms_sit_on_the_branch_before_each_residual_add():
    """A = x + norm2(FFN(x)) with x = P + norm1(attention): checked by replacing the branches."""
    torch.manual_seed(0)
    module = FINE(64, 64, num_heads=8, attention="linear").double().eval()
    low, high = torch.randn(1, 64, 4, 4, dtype=torch.float64), torch.randn(1, 64, 2, 2, dtype=torch.float64)
    tokens = flatten_tokens(low)
    x = tokens + module.norm1(module.cross_attention(low, high))
    a = x + module.norm2(module.linear2(F.gelu(module.linear1(x))))
    with torch.no_grad():
        torch.testing.assert_close(module.attention_map(low, high), a.transpose(1, 2).reshape(1, 64, 4, 4))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("eps", [None, 1e-6])
def test_rmsnorm_matches_torch(dtype, eps):
    """Default eps = the dtype's machine epsilon, as nn.RMSNorm (and the authors' module) uses."""
    torch.manual_seed(0)
    ours = RMSNorm(32, eps=eps).to(dtype)
    ref = nn.RMSNorm(32, eps=eps).to(dtype)
    with torch.no_grad():
        ours.weight.normal_()
        ref.weight.copy_(ours.weight)
    for scale in (3.0, 1e-4):   # mean squares ~9 and ~1e-8: the second is where eps matters
        x = torch.randn(2, 8, 50, 32, dtype=dtype) * scale
        torch.testing.assert_close(ours(x), ref(x))


# ----------------------------------------------------------------------------- shapes and modes

@pytest.mark.parametrize("image_hw", [(640, 640), (512, 768), (480, 480), (800, 800)])
def test_bottleneck_keeps_low_level_shape(image_hw):
    height, width = image_hw
    p4_module, p3_module = rtdetr_pair("linear_bottleneck")
    p3 = torch.randn(1, C, height // 8, width // 8)
    p4 = torch.randn(1, C, height // 16, width // 16)     # also stands in for F4
    f5 = torch.randn(1, C, height // 32, width // 32)
    with torch.no_grad():
        assert p4_module(p4, f5).shape == p4.shape
        assert p3_module(p3, p4).shape == p3.shape


@pytest.mark.parametrize("attention", ["quadratic", "linear"])
def test_full_resolution_modes_keep_low_level_shape(attention):
    module = FINE(C, C, attention=attention)
    low, high = torch.randn(2, C, 16, 24), torch.randn(2, C, 8, 12)   # a 128x192 input's P3 / F4
    with torch.no_grad():
        assert module(low, high).shape == low.shape


def test_bottleneck_without_pooling_is_linear_attention():
    torch.manual_seed(0)
    linear = FINE(C, C, attention="linear")
    bottleneck = FINE(C, C, attention="linear_bottleneck", low_pool=1, high_pool=1)
    bottleneck.load_state_dict(linear.state_dict())
    low, high = torch.randn(1, C, 20, 20), torch.randn(1, C, 10, 10)
    with torch.no_grad():
        torch.testing.assert_close(bottleneck(low, high), linear(low, high))


@pytest.mark.parametrize("attention", ATTENTION_MODES)
def test_residual_modulation_is_low_plus_multiplicative_output(attention):
    torch.manual_seed(0)
    pools = dict(low_pool=2, high_pool=1) if attention == "linear_bottleneck" else {}
    multiply = FINE(C, C, attention=attention, modulation="multiply", **pools).eval()
    residual = FINE(C, C, attention=attention, modulation="residual", **pools).eval()
    residual.load_state_dict(multiply.state_dict())
    low, high = torch.randn(2, C, 20, 20), torch.randn(2, C, 10, 10)
    with torch.no_grad():
        torch.testing.assert_close(residual(low, high), low + multiply(low, high))


@pytest.mark.parametrize("pools", [dict(attention="linear", low_pool=1, high_pool=1),
                                   dict(attention="linear_bottleneck", low_pool=2, high_pool=1)])
def test_linear_modes_finite_under_bf16_autocast_with_large_inputs(pools):
    """App. E's failure setting: reduced precision and large activations."""
    torch.manual_seed(0)
    module = FINE(C, C, **pools)
    low = (torch.randn(2, C, 40, 40) * 1e4).requires_grad_()
    high = (torch.randn(2, C, 20, 20) * 1e4).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(low, high)
    assert torch.isfinite(out).all()
    out.float().pow(2).mean().backward()
    assert torch.isfinite(low.grad).all() and torch.isfinite(high.grad).all()
    for name, param in module.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


def relu_delta_attention(q, k, v):
    """The naive kernel App. E started from: Delta^-1 relu(Q)(relu(K)^T V), Delta = relu(Q) relu(K)^T 1."""
    q, k = F.relu(q), F.relu(k)
    numerator = q @ (k.transpose(-2, -1) @ v)                          # [B, h, N_q, d]
    delta = q @ k.sum(dim=-2, keepdim=True).transpose(-2, -1)          # [B, h, N_q, 1]
    return numerator / delta


def test_relu_delta_kernel_breaks_where_l1_rmsnorm_does_not():
    """A query whose features in a head are all <= 0 has relu(Q_i) = 0, so Delta_i = 0 and the
    naive output is 0/0 (forward and backward NaN). The l1 kernel + RMSNorm stays finite.

    This is a constructed input (one "dead" query), not the paper's training run: on
    random inputs, even scaled by 1e4 under bf16 autocast, the naive kernel stayed finite
    in our checks, so no test claims that.
    """
    torch.manual_seed(0)
    q = torch.randn(1, 8, 40, 32) * 1e4
    q[0, 0, 7] = -q[0, 0, 7].abs()                 # query 7, head 0: all features non-positive
    k, v = torch.randn(1, 8, 20, 32) * 1e4, torch.randn(1, 8, 20, 32) * 1e4
    norm = RMSNorm(32)
    for attention in (relu_delta_attention, lambda *x: norm(linear_attention(*x))):
        inputs = [t.clone().requires_grad_() for t in (q, k, v)]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = attention(*inputs)
        out.float().sum().backward()
        finite = torch.isfinite(out).all() and all(torch.isfinite(t.grad).all() for t in inputs)
        assert finite == (attention is not relu_delta_attention)


# ----------------------------------------------------------------------------- validation and export

def test_bad_names_raise_value_error_listing_allowed_values():
    with pytest.raises(ValueError, match="quadratic.*linear.*linear_bottleneck"):
        FINE(C, C, attention="softmax")
    with pytest.raises(ValueError, match="multiply.*residual"):
        FINE(C, C, modulation="add")
    assert set(ATTENTION_MODES) == {"quadratic", "linear", "linear_bottleneck"}
    assert set(MODULATIONS) == {"multiply", "residual"}


@pytest.mark.parametrize("attention", ["quadratic", "linear"])
def test_pooling_only_allowed_for_bottleneck(attention):
    with pytest.raises(ValueError, match="linear_bottleneck"):
        FINE(C, C, attention=attention, low_pool=2)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_opset17_export_runs_at_other_input_sizes(tmp_path):
    """Legacy (TorchScript) exporter, opset 17, traced at 640x640, run at 512x768."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    module = FINE(C, C, attention="linear_bottleneck", low_pool=4, high_pool=2).eval()
    path = tmp_path / "fine.onnx"
    torch.onnx.export(module, (torch.randn(1, C, 80, 80), torch.randn(1, C, 40, 40)), str(path),
                      opset_version=17, dynamo=False, input_names=["low", "high"], output_names=["refined"],
                      dynamic_axes={"low": {0: "b", 2: "h", 3: "w"}, "high": {0: "b", 2: "h2", 3: "w2"}})
    assert onnx.load(str(path)).opset_import[0].version == 17
    low, high = torch.randn(1, C, 64, 96), torch.randn(1, C, 32, 48)
    (out,) = ort.InferenceSession(str(path)).run(None, {"low": low.numpy(), "high": high.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(out), module(low, high), rtol=1e-4, atol=1e-4)
