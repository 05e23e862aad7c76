"""2-D sine-cosine position embeddings for flattened feature maps."""
import torch


def sincos_2d(height, width, dim=256, temperature=10000.0, device=None):
    """Fixed 2-D sin-cos embedding of an H x W grid, as RT-DETR's AIFI uses it.

    Returns [1, H*W, dim] float32. The first quarter of the channels is sin of the
    column coordinate, then cos(column), sin(row), cos(row), with frequencies
    temperature^(-k / (dim/4)).

    Token order follows the official implementation exactly: its meshgrid is built
    as (width, height) with 'ij' indexing, so token t holds column t // H and
    row t % H. For square maps (the trained 640x640 setting) this is the transpose
    of row-major order; we keep it so official checkpoints compute the same
    numbers. Callers add it to tokens flattened row-major from [B, C, H, W].
    """
    if dim % 4 != 0:
        raise ValueError(f"sin-cos position embedding needs dim divisible by 4, got {dim}")
    cols = torch.arange(width, dtype=torch.float32, device=device)
    rows = torch.arange(height, dtype=torch.float32, device=device)
    grid_c, grid_r = torch.meshgrid(cols, rows, indexing="ij")           # [W, H] each
    quarter = dim // 4
    omega = torch.arange(quarter, dtype=torch.float32, device=device) / quarter
    omega = 1.0 / (temperature ** omega)                                 # [dim/4]
    out_c = grid_c.flatten()[:, None] * omega[None]                      # [W*H, dim/4]
    out_r = grid_r.flatten()[:, None] * omega[None]
    return torch.cat([out_c.sin(), out_c.cos(), out_r.sin(), out_r.cos()], dim=1)[None]
