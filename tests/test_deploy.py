"""rtdetr_fine/deploy.py: onnxruntime agrees with PyTorch, TensorRT-parsable ops, dynamic batch, trace forms."""
import os

import pytest
import torch

from rtdetr_fine import deploy

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

SIZE = 320  # small input keeps the exports quick; the graph is the same as at 640
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {mode: os.path.join(ROOT, "configs", path) for mode, path in {
    "baseline": "rtdetr_r18.yml",
    "quadratic": "ablation/rtdetr_r18_fine_quadratic.yml",
    "linear": "ablation/rtdetr_r18_fine_linear.yml",
    "linear_bottleneck": "ablation/rtdetr_r18_fine_linear_bottleneck.yml",
    "cfsam": "rtdetr_r18_cfsam.yml",
}.items()}

# ONNX ops the TensorRT 10 ONNX parser supports without plugins, restricted to those a
# detector like this plausibly needs. Anything outside this list fails the test and must
# be checked against TensorRT's operator support matrix before it is allowed.
TENSORRT10_OPS = {
    "Abs", "Add", "And", "ArgMax", "AveragePool", "BatchNormalization", "Cast", "Ceil", "Clip", "Concat",
    "Constant", "ConstantOfShape", "Conv", "Cos", "CumSum", "Div", "Einsum", "Equal", "Erf", "Exp", "Expand",
    "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm", "GlobalAveragePool", "Greater",
    "GreaterOrEqual", "GridSample", "HardSigmoid", "HardSwish", "Identity", "LayerNormalization", "LeakyRelu",
    "InstanceNormalization", "ReduceL2",   # GroupNorm (FaPN's FSM), F.normalize (MGC): onnx-tensorrt 10.1 docs
    "Less", "LessOrEqual", "Log", "MatMul", "Max", "MaxPool", "Min", "Mod", "Mul", "Neg", "Not", "Or", "Pad",
    "Pow", "Range", "Reciprocal", "ReduceL1", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "Relu", "Reshape",
    "Resize", "ScatterElements", "ScatterND", "Shape", "Sigmoid", "Sin", "Slice", "Softmax", "Split", "Sqrt",
    "Squeeze", "Sub", "Tanh", "Tile", "TopK", "Transpose", "Unsqueeze", "Where",
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{mode: (DeployModel, path)} for the baseline, the three FINE modes and CFSAM, dynamic batch."""
    folder = tmp_path_factory.mktemp("onnx")
    out = {}
    for mode, config in CONFIGS.items():
        torch.manual_seed(0)
        model = deploy.build_deploy_model(config, log=lambda *a: None)
        path = str(folder / f"{mode}.onnx")
        deploy.export(model, path, SIZE, SIZE, dynamic=True)
        out[mode] = (model, path)
    return out


def pytorch_vs_onnxruntime(model, path, batch_size, seed=1):
    images, sizes = deploy.example_inputs(batch_size, SIZE, SIZE, seed=seed)
    sizes[-1] = torch.tensor([SIZE * 2, SIZE + 64])   # another original-image size in the batch
    with torch.no_grad():
        expected = [t.numpy() for t in model(images, sizes)]
    return expected, deploy.run_onnxruntime(path, images, sizes)


@pytest.mark.parametrize("mode", list(CONFIGS))
def test_onnxruntime_matches_pytorch_for_batch_1_and_3(exported, mode):
    model, path = exported[mode]
    for batch_size in (1, 3):
        expected, got = pytorch_vs_onnxruntime(model, path, batch_size)
        assert [a.shape for a in got] == [(batch_size, 300), (batch_size, 300, 4), (batch_size, 300)]
        assert got[0].dtype.name == "int64" and got[1].dtype.name == got[2].dtype.name == "float32"
        top100 = lambda outs: [a[:, :100] for a in outs]  # noqa: E731
        assert deploy.twin_fraction(top100(expected), top100(got)) >= 0.95, (mode, batch_size)


@pytest.mark.parametrize("mode", list(CONFIGS))
def test_opset_17_interface_and_tensorrt_op_set(exported, mode):
    _, path = exported[mode]
    graph = onnx.load(path)
    onnx.checker.check_model(graph)
    assert [(o.domain, o.version) for o in graph.opset_import] == [("", 17)]
    assert [i.name for i in graph.graph.input] == ["images", "orig_target_sizes"]
    assert [o.name for o in graph.graph.output] == ["labels", "boxes", "scores"]
    assert graph.graph.input[1].type.tensor_type.elem_type == onnx.TensorProto.INT64
    unsupported = set(deploy.op_types(path)) - TENSORRT10_OPS
    assert not unsupported, f"{mode}: ops outside the TensorRT 10 list: {sorted(unsupported)}"


def test_backbone_shortcut_pools_export_without_ceil_mode_and_are_restored(exported):
    """The even-sized shortcut poolings are traced with ceil_mode=0 (same numbers at multiples of
    32, checked by the agreement tests; onnxruntime then keeps them in its blocked layout), and
    the model keeps ceil_mode=True afterwards, as trained."""
    model, path = exported["baseline"]
    pools = [n for n in onnx.load(path).graph.node if n.op_type == "AveragePool" and "/backbone/" in n.name]
    assert len(pools) == 3
    for node in pools:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs.get("ceil_mode", 0) == 0 and attrs["kernel_shape"] == [2, 2], node.name
    ceil = [m.ceil_mode for name, m in model.named_modules() if isinstance(m, torch.nn.AvgPool2d)
            and ".backbone." in f".{name}."]
    assert ceil == [True, True, True]


def test_fine_upsampling_is_traced_so_onnxruntime_keeps_it_in_the_blocked_layout(tmp_path):
    """FINE's Up(.) exports as an identity 1x1 AveragePool before the Resize (deploy.blocked_layout_upsample):
    in onnxruntime's optimised graph of a fixed-batch export every upsampling is then an NCHWc Upsample, and
    no full-resolution map is reordered for FINE (no reorder feeds a product or leaves a concat), the
    reorders the plain form needs. The module keeps its own upsample afterwards; the same values."""
    ort = pytest.importorskip("onnxruntime")
    from rtdetr_fine.modules.fine import FINE, upsample_bilinear

    a = torch.randn(2, 8, 5, 7)
    assert torch.equal(deploy.blocked_layout_upsample(a, (20, 14)), upsample_bilinear(a, (20, 14)))
    torch.manual_seed(0)
    model = deploy.build_deploy_model(CONFIGS["linear_bottleneck"], log=lambda *a: None)
    forms = {}
    for form, path in (("blocked", tmp_path / "blocked.onnx"), ("plain", tmp_path / "plain.onnx")):
        if form == "plain":   # the export as it was: FINE's upsample traced as it is
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(deploy, "blocked_layout_upsample", upsample_bilinear)
                deploy.export(model, str(path), SIZE, SIZE)
        else:
            deploy.export(model, str(path), SIZE, SIZE)
        options = ort.SessionOptions()
        options.log_severity_level = 3     # (its note that an NCHWc graph suits this CPU only)
        options.optimized_model_filepath = str(tmp_path / f"{form}_optimised.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        forms[form] = onnx.load(options.optimized_model_filepath).graph
    assert all("upsample" not in vars(m) for m in model.modules() if isinstance(m, FINE))

    def layout_report(graph):
        producers = {out: node for node in graph.node for out in node.output}
        consumers = {}
        for node in graph.node:
            for name in node.input:
                consumers.setdefault(name, []).append(node.op_type)
        resizes = sum(node.op_type == "Resize" for node in graph.node)
        full_resolution_reorders = sum(
            (node.op_type == "ReorderInput" and producers[node.input[0]].op_type == "Concat")
            or (node.op_type == "ReorderOutput" and bool({"Mul", "Concat"} & set(consumers.get(node.output[0], []))))
            for node in graph.node)
        return resizes, full_resolution_reorders

    assert layout_report(forms["blocked"]) == (0, 0)
    plain_resizes, plain_reorders = layout_report(forms["plain"])
    assert plain_resizes == 2 and plain_reorders >= 4       # what the form removes
    fine_pools = [n for n in onnx.load(str(tmp_path / "blocked.onnx")).graph.node
                  if n.op_type == "AveragePool" and "/fine." in n.name
                  and [onnx.helper.get_attribute_value(a) for a in n.attribute if a.name == "kernel_shape"] == [[1, 1]]]
    assert len(fine_pools) == 2
    expected, got = pytorch_vs_onnxruntime(model, str(tmp_path / "blocked.onnx"), 1)
    assert deploy.twin_fraction([a[:, :100] for a in expected], [a[:, :100] for a in got]) >= 0.95


def test_twin_fraction_ignores_order_but_not_tolerance():
    labels = torch.tensor([[1, 2, 3]]).numpy()
    boxes = torch.tensor([[[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 2, 2]]], dtype=torch.float32).numpy()
    scores = torch.tensor([[0.9, 0.8, 0.7]]).numpy()
    reference = (labels, boxes, scores)
    shuffled = (labels[:, ::-1], boxes[:, ::-1], scores[:, ::-1])
    assert deploy.twin_fraction(reference, shuffled) == 1.0
    moved = boxes.copy()
    moved[0, 0, 0] += 0.6
    assert deploy.twin_fraction(reference, (labels, moved, scores)) == pytest.approx(2 / 3)
