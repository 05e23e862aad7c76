"""FaPN as the FINE authors ran it in RT-DETR (rtdetr_fine/modules/fapn.py): each step against their
float64 fixture (../shared/conformance/t2_fapn_seed0.pt, README_t2.md), its DCN's groups, and where
the aligned map goes in the encoder. Whole models and parameter counts: test_table2_models.py."""
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_maps_close, table2_authors_encoder, table2_model

from rtdetr_fine.modules.fapn import FeatureAlign, FeatureSelectionModule


@pytest.fixture(scope="module")
def authors():
    return table2_authors_encoder("fapn")


def test_feature_selection_replaces_the_input_projections(authors):
    encoder, fx = authors
    with torch.no_grad():
        assert_maps_close(encoder.project(fx["backbone_feats"]), fx["proj_feats"])


@pytest.mark.parametrize("j", [0, 1])
def test_each_top_down_step_aligns_the_upsampled_map_as_the_authors(authors, j):
    """steps[j].output = cat[feature_align[j](up, offset[j](cat[P_l, 2 up])), P_l], the CSP block's input."""
    encoder, fx = authors
    step = fx["steps"][j]
    with torch.no_grad():
        aligned = encoder.alignment.align(encoder, j, step["feat_high"], step["feat_low"])
    assert_maps_close([aligned, torch.cat([aligned, step["feat_low"]], dim=1)], [step["feat_align"], step["output"]])
    assert aligned.abs().max() > 0.1       # the fixture's offsets are not trivial (mean |offset| ~1.4 px)


def test_intermediates_of_the_first_step(authors):
    encoder, fx = authors
    step = fx["steps"][0]
    with torch.no_grad():
        upsampled = F.interpolate(step["feat_high"], scale_factor=2.0, mode="nearest")
        offset_features = encoder.offset[0](torch.cat([step["feat_low"], 2 * upsampled], dim=1))
        offset, mask = encoder.feature_align[0].offset_and_mask(offset_features)
    assert_maps_close([upsampled, offset_features, offset, mask],
                      [step[k] for k in ("upsample_feat", "offset_module_out", "dcn_offset", "dcn_mask")])
    assert offset.abs().mean() > 1.0


def test_the_encoder_feeds_the_aligned_map_to_the_csp_block():
    """What the FPN block receives: [aligned F_{l+1}, FSM(C_l)], and the FSM output has no BatchNorm."""
    torch.manual_seed(0)
    model = table2_model("fapn", "decoder.num_queries=10", "postprocessor.num_top_queries=10").eval()
    encoder = model.encoder
    seen = {}
    for j in range(2):
        encoder.fpn_blocks[j].register_forward_hook(lambda m, i, o, j=j: seen.__setitem__(("fpn", j), i[0]))
        encoder.feature_align[j].register_forward_hook(lambda m, i, o, j=j: seen.__setitem__(("align", j), o))
    for i, fsm in enumerate(encoder.feature_selection):
        fsm.register_forward_hook(lambda m, inp, o, i=i: seen.__setitem__(("fsm", i), o))
    with torch.no_grad():
        model(torch.rand(1, 3, 128, 128))
    for j, low_level in [(0, 1), (1, 0)]:
        torch.testing.assert_close(seen[("fpn", j)], torch.cat([seen[("align", j)], seen[("fsm", low_level)]], 1),
                                   rtol=0, atol=0)


def test_the_deformable_conv_has_8_groups_as_the_authors_log_counts():
    """0.572M parameters per DCN (their log): weight [256, 32, 3, 3], offset/mask conv 256 -> 216."""
    dcn = table2_model("fapn").encoder.feature_align[0]
    assert dcn.deform_conv.deform_conv.weight.shape == (256, 32, 3, 3)
    assert sum(p.numel() for p in dcn.parameters()) == 571_864


def test_with_the_authors_init_the_alignment_starts_as_a_masked_grouped_conv():
    """conv_offset_mask starts at zero: offsets 0 and masks 1/2, so the DCN is relu(conv/2 + b) with 8 groups."""
    torch.manual_seed(0)
    align = FeatureAlign(64, groups=8).double()
    x, offset_features = torch.randn(1, 64, 6, 7, dtype=torch.float64), torch.randn(1, 64, 6, 7, dtype=torch.float64)
    conv = align.deform_conv.deform_conv
    expected = F.relu(F.conv2d(x, conv.weight, padding=1, groups=8) / 2 + conv.bias[:, None, None])
    torch.testing.assert_close(align(x, offset_features), expected)


def test_feature_selection_reweights_by_the_global_mean():
    """x + x * sigmoid(GN(W mean(x))) then the 1x1 projection, checked on a hand-made input."""
    torch.manual_seed(0)
    fsm = FeatureSelectionModule(64, 32).double()
    x = torch.randn(2, 64, 5, 3, dtype=torch.float64)
    attention = torch.sigmoid(fsm.norm_atten(fsm.conv_atten(x.mean((2, 3), keepdim=True))))
    torch.testing.assert_close(fsm(x), F.conv2d(x * (1 + attention), fsm.conv.weight))

