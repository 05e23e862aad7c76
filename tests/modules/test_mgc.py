"""MGC as the FINE authors ran it in RT-DETR (rtdetr_fine/modules/mgc.py): its outputs and intermediates
against their float64 fixture (../shared/conformance/t2_mgc_seed0.pt, README_t2.md), and their
similarity, which is not a cosine. Whole models and parameter counts: test_table2_models.py."""
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_maps_close, table2_authors_encoder, table2_model

from rtdetr_fine.modules.mgc import entity_attention


@pytest.fixture(scope="module")
def authors():
    return table2_authors_encoder("mgc")


def test_projections_contexts_and_global_context_are_the_authors(authors):
    """The encoder's projections (MGC's outputs), each level's context and the global context."""
    encoder, fx = authors
    assert encoder.mgc.entity_counts == [256, 192, 128]
    with torch.no_grad():
        outputs = encoder.project(fx["backbone_feats"])
        contexts = encoder.mgc.collect(fx["backbone_feats"])
        global_context = encoder.mgc.reason(contexts)
    assert_maps_close([*outputs, *contexts, global_context],
                      [*fx["outputs"], *fx["context_features"], fx["global_context"]])


def test_the_similarity_is_the_authors_einsum_not_a_cosine():
    """Their einsum 'bni,bci->bni' sums the normalised features over the channels on their own,
    s[b, k, p] = e[b, k, p] * sum_c f[b, c, p], so a position's feature vector enters only through that
    sum: permuting the channels leaves the attention as it is (a cosine with the entities would not)."""
    torch.manual_seed(0)
    features, entities = torch.randn(2, 8, 3, 5, dtype=torch.float64), torch.randn(2, 6, 3, 5, dtype=torch.float64)
    f_hat, e_hat = F.normalize(features, dim=1).flatten(2), F.normalize(entities, dim=1).flatten(2)
    expected = torch.softmax(torch.einsum("bni,bci->bni", e_hat, f_hat) * 8 ** 0.5, dim=2)   # scaled by sqrt(c)
    torch.testing.assert_close(entity_attention(features, entities), expected)
    torch.testing.assert_close(entity_attention(features[:, torch.randperm(8)], entities), expected)


def test_the_encoder_runs_mgc_before_aifi_and_the_csp_blocks():
    """MGC's stride-32 output is what AIFI reads (no BatchNorm after it)."""
    torch.manual_seed(0)
    model = table2_model("mgc", "decoder.num_queries=10", "postprocessor.num_top_queries=10").eval()
    encoder, seen = model.encoder, {}
    encoder.mgc.register_forward_hook(lambda m, i, o: seen.__setitem__("mgc", list(o)))
    encoder.encoder[0].register_forward_hook(lambda m, i, o: seen.__setitem__("aifi", i[0]))
    with torch.no_grad():
        model(torch.rand(1, 3, 128, 128))
    torch.testing.assert_close(seen["aifi"], seen["mgc"][2].flatten(2).transpose(1, 2), rtol=0, atol=0)
