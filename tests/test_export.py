"""ONNX export (export_onnx.py): onnxruntime agrees with PyTorch, TensorRT-parsable ops, dynamic batch."""
import os

import pytest
import torch

import export_onnx

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

SIZE = 320  # small input keeps the exports quick; the graph is the same as at 640
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {mode: os.path.join(ROOT, "configs", path) for mode, path in {
    "baseline": "rtdetr_r18.yml",
    "quadratic": "ablation/rtdetr_r18_fine_quadratic.yml",
    "linear": "ablation/rtdetr_r18_fine_linear.yml",
    "linear_bottleneck": "ablation/rtdetr_r18_fine_linear_bottleneck.yml",
}.items()}

# ONNX ops the TensorRT 10 ONNX parser supports without plugins, restricted to those a
# detector like this plausibly needs. Anything outside this list fails the test and must
# be checked against TensorRT's operator support matrix before it is allowed.
TENSORRT10_OPS = {
    "Abs", "Add", "And", "ArgMax", "AveragePool", "BatchNormalization", "Cast", "Ceil", "Clip", "Concat",
    "Constant", "ConstantOfShape", "Conv", "Cos", "CumSum", "Div", "Einsum", "Equal", "Erf", "Exp", "Expand",
    "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm", "GlobalAveragePool", "Greater",
    "GreaterOrEqual", "GridSample", "HardSigmoid", "HardSwish", "Identity", "LayerNormalization", "LeakyRelu",
    "Less", "LessOrEqual", "Log", "MatMul", "Max", "MaxPool", "Min", "Mod", "Mul", "Neg", "Not", "Or", "Pad",
    "Pow", "Range", "Reciprocal", "ReduceL1", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceSum", "Relu", "Reshape",
    "Resize", "ScatterElements", "ScatterND", "Shape", "Sigmoid", "Sin", "Slice", "Softmax", "Split", "Sqrt",
    "Squeeze", "Sub", "Tanh", "Tile", "TopK", "Transpose", "Unsqueeze", "Where",
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{mode: (DeployModel, path)} for the baseline and the three FINE modes, dynamic batch."""
    folder = tmp_path_factory.mktemp("onnx")
    out = {}
    for mode, config in CONFIGS.items():
        torch.manual_seed(0)
        model = export_onnx.build_deploy_model(config, log=lambda *a: None)
        path = str(folder / f"{mode}.onnx")
        export_onnx.export(model, path, SIZE, SIZE, dynamic=True)
        out[mode] = (model, path)
    return out


def pytorch_vs_onnxruntime(model, path, batch_size, seed=1):
    images, sizes = export_onnx.example_inputs(batch_size, SIZE, SIZE, seed=seed)
    sizes[-1] = torch.tensor([SIZE * 2, SIZE + 64])   # another original-image size in the batch
    with torch.no_grad():
        expected = [t.numpy() for t in model(images, sizes)]
    return expected, export_onnx.run_onnxruntime(path, images, sizes)


@pytest.mark.parametrize("mode", list(CONFIGS))
def test_onnxruntime_matches_pytorch_for_batch_1_and_3(exported, mode):
    model, path = exported[mode]
    for batch_size in (1, 3):
        expected, got = pytorch_vs_onnxruntime(model, path, batch_size)
        assert [a.shape for a in got] == [(batch_size, 300), (batch_size, 300, 4), (batch_size, 300)]
        assert got[0].dtype.name == "int64" and got[1].dtype.name == got[2].dtype.name == "float32"
        top100 = lambda outs: [a[:, :100] for a in outs]  # noqa: E731
        assert export_onnx.match_detections(top100(expected), top100(got)) >= 0.95, (mode, batch_size)


@pytest.mark.parametrize("mode", list(CONFIGS))
def test_opset_17_interface_and_tensorrt_op_set(exported, mode):
    _, path = exported[mode]
    graph = onnx.load(path)
    onnx.checker.check_model(graph)
    assert [(o.domain, o.version) for o in graph.opset_import] == [("", 17)]
    assert [i.name for i in graph.graph.input] == ["images", "orig_target_sizes"]
    assert [o.name for o in graph.graph.output] == ["labels", "boxes", "scores"]
    assert graph.graph.input[1].type.tensor_type.elem_type == onnx.TensorProto.INT64
    unsupported = set(export_onnx.op_types(path)) - TENSORRT10_OPS
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


def test_match_detections_ignores_order_but_not_tolerance():
    labels = torch.tensor([[1, 2, 3]]).numpy()
    boxes = torch.tensor([[[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 2, 2]]], dtype=torch.float32).numpy()
    scores = torch.tensor([[0.9, 0.8, 0.7]]).numpy()
    reference = (labels, boxes, scores)
    shuffled = (labels[:, ::-1], boxes[:, ::-1], scores[:, ::-1])
    assert export_onnx.match_detections(reference, shuffled) == 1.0
    moved = boxes.copy()
    moved[0, 0, 0] += 0.6
    assert export_onnx.match_detections(reference, (labels, moved, scores)) == pytest.approx(2 / 3)


def test_cli_loads_checkpoint_simplifies_and_checks(tmp_path, capsys):
    import rtdetr_fine
    cfg = rtdetr_fine.load_config(CONFIGS["baseline"], ["backbone.pretrained=null"])
    torch.manual_seed(3)
    ckpt = tmp_path / "ckpt.pth"   # as training writes it: EMA weights, RepVGG branches unfused
    torch.save({"ema": {"module": rtdetr_fine.build_model(cfg).state_dict()}}, ckpt)
    out = tmp_path / "model.onnx"
    code = export_onnx.main(["-c", CONFIGS["baseline"], "-r", str(ckpt), "-o", str(out),
                             "--input-size", str(SIZE), "--batch-size", "2", "--simplify", "--check"])
    text = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert "loaded ema weights" in text
    assert "simplified with onnx" in text or "neither onnxslim nor onnxsim" in text
    assert "% of the top-100 detections agree" in text
    assert "ONNX op types" in text and "GridSample" in text
    graph = onnx.load(str(out)).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2


@pytest.mark.parametrize("argv, message", [
    (["-c", "configs/missing.yml"], "config file not found"),
    (["-c", CONFIGS["baseline"], "-r", "missing.pth"], "checkpoint not found"),
    (["-c", CONFIGS["baseline"], "-u", "fine.attention=softmax"], "fine.attention must be one of"),
    (["-c", CONFIGS["baseline"], "--input-size", "300"], "multiples of 32"),
    (["-c", CONFIGS["baseline"], "--input-size", "96"], "fewer than decoder.num_queries=300"),
])
def test_cli_errors_are_messages_not_tracebacks(tmp_path, capsys, argv, message):
    assert export_onnx.main(argv + ["-o", str(tmp_path / "x.onnx")]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
