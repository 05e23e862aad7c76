"""The FINE paper's Table 2 baselines deploy like the other RT-DETR configs (rtdetr_fine/deploy.py):
FaPN's deformable convolution is traced as GridSample + a grouped conv, which computes what
torchvision's deform_conv2d computes, so all three export at opset 17 and onnxruntime agrees."""
import os

import pytest
import torch
from fill_weights import fill, read_keys
from helpers import CONFORMANCE, config_path
from torchvision.ops import DeformConv2d, deform_conv2d

from rtdetr_fine import deploy

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from test_deploy import TENSORRT10_OPS  # noqa: E402  (the list the other exports are held to)

SIZE = 256


@pytest.mark.parametrize("channels, out, groups, offset_groups, stride, pad, dilation, kernel", [
    (256, 256, 8, 8, 1, 1, 1, 3),      # FaPN's: 8 conv groups, 8 offset groups
    (16, 12, 2, 4, 2, 2, 2, 3),        # conv and offset groups differ; stride and dilation
    (8, 6, 1, 1, 1, 0, 1, 2),          # an even kernel, no padding
])
@pytest.mark.parametrize("modulated", [True, False])
def test_sampling_form_computes_torchvisions_deform_conv2d(channels, out, groups, offset_groups, stride, pad,
                                                           dilation, kernel, modulated):
    """Offsets of a few pixels send many samples across the border, where both read zeros."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, channels, 11, 13, generator=g, dtype=torch.float64)
    weight = torch.randn(out, channels // groups, kernel, kernel, generator=g, dtype=torch.float64)
    bias = torch.randn(out, generator=g, dtype=torch.float64)
    ho, wo = [(n + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1 for n in (11, 13)]
    offset = 3 * torch.randn(2, 2 * offset_groups * kernel ** 2, ho, wo, generator=g, dtype=torch.float64)
    mask = torch.rand(2, offset_groups * kernel ** 2, ho, wo, generator=g, dtype=torch.float64) if modulated else None
    expected = deform_conv2d(x, offset, weight, bias, stride=stride, padding=pad, dilation=dilation, mask=mask)
    got = deploy.deform_conv2d_by_sampling(x, offset, mask, weight, bias, (stride,) * 2, (pad,) * 2, (dilation,) * 2)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_deform_convs_compute_by_sampling_only_while_exporting():
    conv = DeformConv2d(8, 8, 3, padding=1, groups=2)
    model = torch.nn.Sequential(torch.nn.Identity(), torch.nn.ModuleDict({"dcn": conv}))
    with deploy.sampled_deform_convs(model):
        assert isinstance(model[1]["dcn"], deploy.SampledDeformConv) and model[1]["dcn"].conv is conv
    assert model[1]["dcn"] is conv


@pytest.fixture(scope="module", params=["fapn", "adafpn", "mgc"])
def exported(request, tmp_path_factory):
    """The variant's deploy model with the authors' module weights of the seed-0 fixtures (FaPN's and
    AdaFPN's offsets are not zero then, as they are at init), exported at SIZE."""
    variant = request.param
    torch.manual_seed(0)
    model = deploy.build_deploy_model(config_path(f"ablation/rtdetr_r18_{variant}.yml"), log=lambda *a: None)
    module = fill(read_keys(os.path.join(CONFORMANCE, f"t2_{variant}_keys.tsv")), 0)
    _, unexpected = model.model.encoder.load_state_dict({k: v.float() for k, v in module.items()}, strict=False)
    assert not unexpected
    path = str(tmp_path_factory.mktemp("onnx") / f"{variant}.onnx")
    deploy.export(model, path, SIZE, SIZE)
    return variant, model, path


def test_exports_at_opset_17_with_ops_tensorrt_parses(exported):
    variant, _, path = exported
    graph = onnx.load(path)
    assert [(o.domain, o.version) for o in graph.opset_import] == [("", 17)]
    ops = set(deploy.op_types(path))
    assert "DeformConv" not in ops and not ops - TENSORRT10_OPS, sorted(ops - TENSORRT10_OPS)


def test_onnxruntime_matches_pytorch(exported):
    variant, model, path = exported
    summary = deploy.check(path, model, SIZE, SIZE, batch_size=1)
    assert summary["matched_fraction"] >= 0.95 and summary["max_score_diff"] < 1e-3, (variant, summary)
