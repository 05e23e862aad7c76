"""FLOP and parameter counting.

FLOPs are torch.utils.flop_counter.FlopCounterMode counts, i.e. 2 x multiply-
accumulates of the matrix products in the forward pass:
  * counted: mm / addmm / bmm / baddbmm (nn.Linear, torch.matmul, `@`),
    convolutions (incl. transposed), and attention kernels, 2 * MAC each;
    biases, additions and the softmax inside attention are not counted;
  * not counted: element-wise ops, activations, normalisation layers, pooling,
    interpolation, grid_sample, sorting/top-k, data movement.

Torch's registry leaves out some attention kernels used on CPU; this module
adds formulas for them (through FlopCounterMode's `custom_mapping`, so torch's
global registry is left untouched):
  * aten._scaled_dot_product_flash_attention_for_cpu (+ backward): what
    F.scaled_dot_product_attention dispatches to on CPU. Forward cost
    4 * B * heads * N_q * N_k * d (Q K^T and P V), the attention mask ignored.
  * aten._native_multi_head_attention: nn.MultiheadAttention's fused fast path
    (eval mode, no grad, batch_first self-attention), counted as the slow path
    would be: in-projections, attention, out-projection.
  * aten._transformer_encoder_layer_fwd: nn.TransformerEncoderLayer's fast path
    (same conditions), counted as projections + attention + feed-forward.
  * torchvision.deform_conv2d (FaPN's alignment): counted as the convolution it applies to
    the sampled columns, 2 * B * C_out * H_out * W_out * C_in / groups * kh * kw; the bilinear
    sampling and the mask are not counted (as grid_sample is not).
"""
import math

import torch
import torchvision  # noqa: F401 - registers torch.ops.torchvision (deform_conv2d below)
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten


def attention_flops(query_shape, key_shape, value_shape):
    """2 * MAC of softmax(Q K^T) V for q [B, heads, N_q, d], k [B, heads, N_k, d], v [B, heads, N_k, d_v]."""
    *batch, n_q, d = query_shape
    n_k, d_v = key_shape[-2], value_shape[-1]
    batch_size = math.prod(batch)
    return 2 * batch_size * n_q * n_k * (d + d_v)


def attention_backward_flops(query_shape, key_shape, value_shape):
    """Backward of attention_flops: recompute Q K^T, then grads of P, V, Q and K (5 products)."""
    *batch, n_q, d = query_shape
    n_k, d_v = key_shape[-2], value_shape[-1]
    batch_size = math.prod(batch)
    return 2 * batch_size * n_q * n_k * (3 * d + 2 * d_v)


def sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    """aten._scaled_dot_product_flash_attention_for_cpu (forward)."""
    return attention_flops(query_shape, key_shape, value_shape)


def sdpa_cpu_backward_flop(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
    """aten._scaled_dot_product_flash_attention_for_cpu_backward."""
    return attention_backward_flops(query_shape, key_shape, value_shape)


def native_mha_flop(query_shape, key_shape, value_shape, embed_dim, num_heads, *args, out_shape=None, **kwargs):
    """aten._native_multi_head_attention on [B, N, E] inputs: 3 in-projections + attention + out-projection."""
    *batch, n_q, _ = query_shape
    n_k = key_shape[-2]
    batch_size = math.prod(batch)
    projections = 2 * batch_size * embed_dim * embed_dim * (2 * n_q + 2 * n_k)  # Q, out on N_q; K, V on N_k
    head_dim = embed_dim // num_heads
    attention = attention_flops((batch_size, num_heads, n_q, head_dim),
                                (batch_size, num_heads, n_k, head_dim),
                                (batch_size, num_heads, n_k, head_dim))
    return projections + attention


def transformer_encoder_layer_flop(src_shape, embed_dim, num_heads, qkv_weight_shape, qkv_bias_shape,
                                   proj_weight_shape, proj_bias_shape, use_gelu, norm_first, eps,
                                   norm_weight_1_shape, norm_bias_1_shape, norm_weight_2_shape,
                                   norm_bias_2_shape, ffn_weight_1_shape, *args, out_shape=None, **kwargs):
    """aten._transformer_encoder_layer_fwd on [B, N, E]: self-attention block + 2-layer feed-forward."""
    *batch, n, _ = src_shape
    batch_size = math.prod(batch)
    ffn_dim = ffn_weight_1_shape[0]
    attention_block = native_mha_flop(src_shape, src_shape, src_shape, embed_dim, num_heads)
    feed_forward = 2 * 2 * batch_size * n * embed_dim * ffn_dim
    return attention_block + feed_forward


def deform_conv2d_flop(input_shape, weight_shape, *args, out_shape=None, **kwargs):
    """torchvision.deform_conv2d(input, weight, offset, mask, bias, ...): the convolution's 2 * MAC."""
    return 2 * math.prod(out_shape) * math.prod(weight_shape[1:])


EXTRA_FLOP_FORMULAS = {
    aten._scaled_dot_product_flash_attention_for_cpu: sdpa_cpu_flop,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: sdpa_cpu_backward_flop,
    aten._native_multi_head_attention: native_mha_flop,
    aten._transformer_encoder_layer_fwd: transformer_encoder_layer_flop,
    torch.ops.torchvision.deform_conv2d: deform_conv2d_flop,
}


def flop_counter(display=False, depth=2):
    """A FlopCounterMode that also counts the CPU attention kernels listed above."""
    return FlopCounterMode(display=display, depth=depth, custom_mapping=EXTRA_FLOP_FORMULAS)


def count_flops(model, *inputs):
    """FLOPs (2 x MAC) of one forward pass of `model(*inputs)`.

    Runs under torch.no_grad in the model's current train/eval mode (the mode
    is not changed). See the module docstring for what is and isn't counted.
    """
    with torch.no_grad(), flop_counter() as counter:
        model(*inputs)
    return counter.get_total_flops()


def count_params(model):
    """Number of parameters of `model` (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())
