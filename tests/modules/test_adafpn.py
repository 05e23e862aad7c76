"""AdaFPN as the FINE authors ran it in RT-DETR (rtdetr_fine/modules/adafpn.py): each step against their
float64 fixture (../shared/conformance/t2_adafpn_seed0.pt, README_t2.md), the float32 base grid, and
that the block replaces the whole top-down fusion. Whole models and parameter counts:
test_table2_models.py."""
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_maps_close, table2_authors_encoder, table2_model

from rtdetr_fine.modules.adafpn import AdaUp, base_grid


@pytest.fixture(scope="module")
def authors():
    return table2_authors_encoder("adafpn")


@pytest.mark.parametrize("j", [0, 1])
def test_each_top_down_step_is_the_authors_block(authors, j):
    encoder, fx = authors
    step = fx["steps"][j]
    with torch.no_grad():
        out = encoder.fuse(j, step["feat_high"], step["feat_low"])
        offsets = encoder.ada_fpn_blocks[j].ada_up.offsets(step["feat_high"], step["feat_low"])
    assert_maps_close([out, offsets], [step["output"], step["ada_up_offsets"]])
    assert offsets.abs().mean() > 0.1


def test_intermediates_of_the_first_step(authors):
    encoder, fx = authors
    step, block = fx["steps"][0], encoder.ada_fpn_blocks[0]
    with torch.no_grad():
        upsampled = block.ada_up(step["feat_high"], step["feat_low"])
        weights = block.aff.weights(upsampled, step["feat_low"])
    assert_maps_close([upsampled, weights], [step["ada_up_out"], step["aff_attention"]])


def test_a_float64_base_grid_would_not_reproduce_the_authors(authors, monkeypatch):
    """Their linspace grid is float32 (the default dtype) even in a float64 model; built in float64 it
    moves the output by more than the 1e-6 the fixtures are checked to."""
    encoder, fx = authors
    step = fx["steps"][0]
    import rtdetr_fine.modules.adafpn as adafpn

    def float64_grid(height, width, device=None):
        ys, xs = (torch.linspace(-1, 1, n, dtype=torch.float64) for n in (height, width))
        return torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], dim=-1)[None]

    torch.testing.assert_close(float64_grid(20, 20), base_grid(20, 20).double(), rtol=0, atol=1e-7)   # ulps apart
    monkeypatch.setattr(adafpn, "base_grid", float64_grid)
    with torch.no_grad():
        out = encoder.fuse(0, step["feat_high"], step["feat_low"])
    assert (out - step["output"]).abs().max() > 1e-7


def test_the_block_output_is_the_fused_map_with_no_csp_block_after_it():
    """Step 1's block output is the top-down path's stride-8 map, which the bottom-up path starts from."""
    torch.manual_seed(0)
    model = table2_model("adafpn", "decoder.num_queries=10", "postprocessor.num_top_queries=10").eval()
    encoder, seen = model.encoder, {}
    encoder.ada_fpn_blocks[1].register_forward_hook(lambda m, i, o: seen.__setitem__("block1", o))
    encoder.downsample_convs[0].register_forward_hook(lambda m, i, o: seen.__setitem__("pan_in", i[0]))
    with torch.no_grad():
        outs = encoder([torch.rand(1, c, 64 // s, 64 // s) for c, s in [(128, 1), (256, 2), (512, 4)]])
    assert torch.equal(seen["pan_in"], seen["block1"]) and torch.equal(outs[0], seen["block1"])


def test_with_the_authors_init_adaup_samples_the_base_grid():
    """offset_conv2 starts at zero: the 4 points coincide, and the output is the projected F_{l+1} sampled
    on linspace(-1, 1) (border padding), i.e. not the bilinear upsampling (which hits pixel centres)."""
    torch.manual_seed(0)
    up = AdaUp(16, 16).double()
    high, low = torch.randn(1, 16, 5, 6, dtype=torch.float64), torch.randn(1, 16, 10, 12, dtype=torch.float64)
    projected = up.feature_conv(high)
    grid = base_grid(10, 12).double()
    expected = F.grid_sample(projected, grid, mode="bilinear", padding_mode="border", align_corners=False)
    torch.testing.assert_close(up(high, low), expected)
    bilinear = F.interpolate(projected, scale_factor=2, mode="bilinear", align_corners=False)
    assert (up(high, low) - bilinear).abs().max() > 1e-3
