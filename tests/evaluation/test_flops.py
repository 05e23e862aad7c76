"""Tests for FLOP / parameter counting (rtdetr_fine/evaluation/flops.py)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rtdetr_fine.modules.fine import FINE
from rtdetr_fine.evaluation.flops import count_flops, count_params, flop_counter

C = 256
HEADS = 16   # the FINE authors' RT-DETR modules


def test_linear_layer_is_two_times_mac():
    layer = nn.Linear(16, 32)
    assert count_flops(layer, torch.randn(4, 16)) == 2 * 4 * 16 * 32
    assert count_params(layer) == 16 * 32 + 32


def test_count_flops_keeps_train_mode():
    layer = nn.Sequential(nn.Linear(8, 8), nn.Dropout(0.5)).train()
    count_flops(layer, torch.randn(2, 8))
    assert layer.training


class SDPABlock(nn.Module):
    """Q / K / V projections followed by F.scaled_dot_product_attention."""

    def __init__(self, dim=64, heads=4):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x, y):
        split = lambda t: t.unflatten(-1, (self.heads, -1)).transpose(1, 2)   # [B, heads, N, d]
        return F.scaled_dot_product_attention(split(self.q(x)), split(self.k(y)), split(self.v(y)))


def test_cpu_sdpa_is_counted():
    batch, n_q, n_k, dim, heads = 2, 30, 20, 64, 4
    block = SDPABlock(dim, heads)
    x, y = torch.randn(batch, n_q, dim), torch.randn(batch, n_k, dim)
    projections = 2 * batch * dim * dim * (n_q + 2 * n_k)
    attention = 4 * batch * heads * n_q * n_k * (dim // heads)
    flops = count_flops(block, x, y)
    assert flops > projections
    assert flops - projections == attention


def test_cpu_sdpa_backward_is_counted():
    q, k, v = (torch.randn(2, 4, n, 16, requires_grad=True) for n in (30, 20, 20))
    with flop_counter() as counter:
        F.scaled_dot_product_attention(q, k, v).sum().backward()
    forward = 4 * 2 * 4 * 30 * 20 * 16
    assert counter.get_total_flops() == forward + forward // 4 * 10    # backward: 5 products


def test_multihead_attention_fast_path_counts_like_slow_path():
    mha = nn.MultiheadAttention(64, 8, batch_first=True).eval()
    x = torch.randn(2, 20, 64)
    fast = count_flops(mha, x, x, x)                  # no_grad + eval: fused native kernel
    with flop_counter() as counter:                   # grad enabled: decomposed path
        mha(x, x, x)
    assert fast == counter.get_total_flops() == 2 * 2 * 20 * 64 * 64 * 4 + 4 * 2 * 20 * 20 * 64


def test_transformer_encoder_layer_fast_path_counts_like_slow_path():
    layer = nn.TransformerEncoderLayer(64, 8, dim_feedforward=128, batch_first=True).eval()
    x = torch.randn(2, 20, 64)
    fast = count_flops(layer, x)
    with flop_counter() as counter:
        layer(x)
    assert fast == counter.get_total_flops() > 0


# ----------------------------------------------------------------------------- FINE at 640x640

# (low level H*W, high level H*W, low_pool, high_pool) of the two RT-DETR modules at 640x640.
PAIRS_640 = (((80, 80), (40, 40), 4, 2),   # P3 refined by F4
             ((40, 40), (20, 20), 2, 1))   # P4 refined by F5
PAPER_TABLE3_GFLOPS = {"quadratic": 22.2, "linear": 11.4, "linear_bottleneck": 1.3}


def expected_fine_flops(attention, n_low, n_high):
    """Analytic 2 x MAC of one FINE module: projections + FFN + attention products."""
    projections = 2 * C * C * (2 * n_low + 2 * n_high)         # Q, out on low tokens; K, V on high
    ffn = 2 * 2 * n_low * C * 4 * C
    head_dim = C // HEADS
    if attention == "quadratic":
        attention_products = 4 * HEADS * n_low * n_high * head_dim
    else:
        attention_products = 2 * HEADS * head_dim * head_dim * (n_high + n_low)   # K^T V, then Q (K^T V)
    return projections + ffn + attention_products


def two_module_flops(attention):
    total, expected = 0, 0
    for low_hw, high_hw, low_pool, high_pool in PAIRS_640:
        bottleneck = attention == "linear_bottleneck"
        module = FINE(C, C, attention=attention, low_pool=low_pool if bottleneck else 1,
                      high_pool=high_pool if bottleneck else 1).eval()
        low, high = torch.randn(1, C, *low_hw), torch.randn(1, C, *high_hw)
        total += count_flops(module, low, high)
        n_low = low_hw[0] * low_hw[1] // (low_pool ** 2 if bottleneck else 1)
        n_high = high_hw[0] * high_hw[1] // (high_pool ** 2 if bottleneck else 1)
        expected += expected_fine_flops(attention, n_low, n_high)
    return total, expected


@pytest.fixture(scope="module")
def fine_gflops():
    return {attention: two_module_flops(attention) for attention in PAPER_TABLE3_GFLOPS}


def test_fine_flops_ordering_and_analytic_values(fine_gflops):
    for attention, (measured, expected) in fine_gflops.items():
        print(f"FINE x2 @640x640 {attention:>17}: {measured / 1e9:.3f} GFLOPs "
              f"(paper Table 3: +{PAPER_TABLE3_GFLOPS[attention]} G)")
        assert measured == expected
    assert fine_gflops["quadratic"][0] > fine_gflops["linear"][0] > fine_gflops["linear_bottleneck"][0]


def test_fine_flops_close_to_paper_table3(fine_gflops):
    for attention, (measured, _) in fine_gflops.items():
        assert measured / 1e9 == pytest.approx(PAPER_TABLE3_GFLOPS[attention], rel=0.05)
