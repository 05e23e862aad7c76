"""Deployment: the detector + post-processor as one graph, its ONNX export and onnxruntime.

The exported graph has the official RT-DETR deploy interface, so TensorRT / onnxruntime
scripts written for it work unchanged:

    inputs   images              float32 [N, 3, H, W], RGB in [0, 1]
             orig_target_sizes   int64   [N, 2], (width, height) of the original images
    outputs  labels              int64   [N, K]     contiguous class ids (0..num_classes-1)
             boxes               float32 [N, K, 4]  xyxy in original-image pixels
             scores              float32 [N, K]     sigmoid scores, sorted descending

Deploy-only forms live here, not in the model files: `model.deploy()` converts every
module that offers `convert_to_deploy` (RepVGG blocks fuse their branches),
`fixed_size_forms` applies the forms that only hold for one traced input size, and
`sampled_deform_convs` traces torchvision's deformable convolutions (FaPN) in ops of our opset.
"""
import contextlib
import os
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import DeformConv2d

from .build import build_model, build_postprocessor
from .checkpoint import load_weights
from .checkpoint import check_checkpoint_file, config_for_checkpoint, inference_class_set
from .data.classes import apply_class_set
from .cli import check_output_file
from .modules.fine import FINE, upsample_bilinear

INPUT_NAMES = ["images", "orig_target_sizes"]
OUTPUT_NAMES = ["labels", "boxes", "scores"]
OPSET = 17   # TensorRT 8.6+ and onnxruntime; the TorchScript exporter (dynamo=False) reaches it


class DeployModel(nn.Module):
    """Model + post-processor in deploy mode: (images, orig_target_sizes) -> (labels, boxes, scores).

    `image_size` is the size it is exported at by default (the config's val_dataloader.image_size).
    """

    def __init__(self, model: nn.Module, postprocessor: nn.Module, image_size=640):
        super().__init__()
        self.model = model.deploy()
        self.postprocessor = postprocessor.deploy()
        self.image_size = image_size

    def forward(self, images: torch.Tensor, orig_target_sizes: torch.Tensor):
        return self.postprocessor(self.model(images), orig_target_sizes)


def build_deploy_model(config: str | None, checkpoint: str | None = None, overrides=(), log=print) -> DeployModel:
    """Config path (+ checkpoint, + `-u` overrides) -> DeployModel in eval/deploy mode. config None: the
    config the checkpoint records (checkpoint.config_for_checkpoint, which also refuses a config that
    builds another model than the checkpoint's).

    Raises ConfigError / FileNotFoundError / ValueError with messages naming the file or key.
    """
    if checkpoint:
        check_checkpoint_file(checkpoint)
    # every weight comes from the checkpoint (or stays random): no ImageNet download
    cfg, source = config_for_checkpoint(config, checkpoint, ["backbone.pretrained=null", *overrides])
    if config is None:
        log(f"config: {source}")
    if cfg["num_classes"] == "auto":   # the count of the checkpoint's (or the annotation file's) class set
        apply_class_set(cfg, inference_class_set(cfg, checkpoint)[0])
    model = build_model(cfg)
    if checkpoint:
        which = load_weights(model, checkpoint)
        log(f"loaded {which} weights from {checkpoint}")
    else:
        log("no checkpoint given: exporting randomly initialised weights")
    return DeployModel(model, build_postprocessor(cfg), cfg["val_dataloader"]["image_size"]).eval()


def example_inputs(batch_size: int, height: int, width: int, seed: int = 0):
    """Random images in [0, 1] and their (w, h) sizes, as the exported graph expects."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch_size, 3, height, width, generator=g)
    sizes = torch.tensor([[width, height]] * batch_size, dtype=torch.int64)
    return images, sizes


def size_divisibility(model: nn.Module) -> int:
    """What input sides must be multiples of: the model's `size_divisibility` (SSD300: 1), else
    RT-DETR's coarsest stride, 32."""
    return getattr(model, "size_divisibility", 32)


def check_input_size(height: int, width: int, divisor: int = 32) -> None:
    """The anchors (and RT-DETR's sampling grids) are built for one size, a multiple of `divisor`."""
    if height <= 0 or width <= 0 or height % divisor or width % divisor:
        what = f"positive multiples of {divisor} (the coarsest stride)" if divisor > 1 else "positive"
        raise ValueError(f"the input size must be {what}, got {height}x{width}")


def blocked_layout_upsample(a: torch.Tensor, size) -> torch.Tensor:
    """FINE's Up(.) (Eq. 7: bilinear, align_corners=False) as export traces it: the same values, in the
    form onnxruntime runs in its blocked channel layout (NCHWc, the layout of its convolutions).

    Traced as it is, Up(.) reads A_l from a Reshape, so onnxruntime leaves the Resize in plain NCHW
    layout and reorders full-resolution maps around each FINE module: P_l out of NCHWc for the product
    P_l * A_l, the upsampled F_{l+1} out for the concat before the fusion block, and that concat back in
    for the block's convolutions (at P3: 80 x 80 maps of 256 and 512 channels, per image). Here an
    identity 1x1 average pooling, which onnxruntime runs in NCHWc, first moves the small A_l (20 x 20 at
    640) into that layout; the Resize (a constant integer scale factor), the product and the concat then
    stay in NCHWc. With a dynamic batch onnxruntime cannot tell A_l's channel count and keeps the plain
    layout, as before (the pooling is then a copy of a small map). Sizes that are not integer multiples
    of A_l's keep the plain form.
    """
    (h, w), (height, width) = a.shape[-2:], size
    if int(height) % int(h) or int(width) % int(w):
        return upsample_bilinear(a, size)
    a = F.avg_pool2d(a, kernel_size=1)                  # the identity that moves A_l into NCHWc
    return F.interpolate(a, scale_factor=(int(height) // int(h), int(width) // int(w)), mode="bilinear",
                         align_corners=False)


@contextlib.contextmanager
def fixed_size_forms(model: nn.Module):
    """Trace-time forms for one fixed input size (a multiple of 32); the outputs do not change.

    The backbone's shortcut AvgPool2d(2, 2, ceil_mode=True) is traced with ceil_mode=False:
    its inputs are at strides 4, 8 and 16 of an input that is a multiple of 32, so they have
    even sizes and ceil_mode changes nothing, but onnxruntime runs ceil_mode pooling outside
    its blocked convolution layout (measured gain: docs/benchmark.md, "The deploy-time forms").
    torch's fused fast path of nn.TransformerEncoderLayer / nn.MultiheadAttention (CFSAM) is
    switched off while tracing: its kernels have no ONNX form; the regular path computes the same.
    FINE's bilinear upsampling of A_l is traced as blocked_layout_upsample (same values, a form
    onnxruntime runs without reordering full-resolution maps).
    """
    ceil_pools = [m for name, m in model.named_modules()
                  if ".backbone." in f".{name}." and isinstance(m, nn.AvgPool2d) and m.ceil_mode]
    for m in ceil_pools:
        m.ceil_mode = False
    fine_modules = [m for m in model.modules() if isinstance(m, FINE)]
    for m in fine_modules:
        m.upsample = blocked_layout_upsample           # an instance attribute over the method, removed below
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield model
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for m in fine_modules:
            del m.upsample
        for m in ceil_pools:
            m.ceil_mode = True


def deform_conv2d_by_sampling(x, offset, mask, weight, bias, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    """torchvision.ops.deform_conv2d (modulated when `mask` is given) as GridSample + a grouped 1x1 conv.

    Each kernel point k of each offset group reads x at (h * stride - pad + k_i * dil + dy, ...):
    GridSample (bilinear, zeros padding, align_corners False) interpolates exactly as deform_conv2d
    does, a corner outside the map reading 0. The samples, times the mask, form the columns
    [B, C * kh * kw, Ho, Wo] that the weight, reshaped to a 1x1 kernel, contracts group by group.
    x [B, C, H, W], offset [B, 2 G kh kw, Ho, Wo], mask [B, G kh kw, Ho, Wo] -> [B, C_out, Ho, Wo].
    """
    b, c, h, w = x.shape
    out_channels, group_channels, kh, kw = weight.shape
    points, (ho, wo) = kh * kw, offset.shape[-2:]
    groups = offset.shape[1] // (2 * points)                                     # offset groups
    offset = offset.view(b, groups, points, 2, ho, wo)                           # (dy, dx) per point
    arange = lambda n: torch.arange(n, device=x.device)                          # noqa: E731
    point_y = (arange(kh) * dilation[0]).repeat_interleave(kw).view(points, 1, 1)
    point_x = (arange(kw) * dilation[1]).repeat(kh).view(points, 1, 1)
    y = (arange(ho) * stride[0] - padding[0]).view(ho, 1) + point_y + offset[:, :, :, 0]   # [B, G, P, Ho, Wo]
    x_pos = (arange(wo) * stride[1] - padding[1]).view(1, wo) + point_x + offset[:, :, :, 1]
    grid = torch.stack([(2 * x_pos + 1) / w - 1, (2 * y + 1) / h - 1], dim=-1).view(b * groups, points * ho, wo, 2)
    sampled = F.grid_sample(x.reshape(b * groups, c // groups, h, w), grid, mode="bilinear", padding_mode="zeros",
                            align_corners=False).view(b, groups, c // groups, points, ho, wo)
    if mask is not None:
        sampled = sampled * mask.view(b, groups, 1, points, ho, wo)
    columns = sampled.reshape(b, c * points, ho, wo)                             # channel c_in * P + point
    return F.conv2d(columns, weight.reshape(out_channels, group_channels * points, 1, 1), bias,
                    groups=c // group_channels)


class SampledDeformConv(nn.Module):
    """A DeformConv2d's computation by deform_conv2d_by_sampling, with the same weights."""

    def __init__(self, conv: DeformConv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x, offset, mask=None):
        c = self.conv
        return deform_conv2d_by_sampling(x, offset, mask, c.weight, c.bias, c.stride, c.padding, c.dilation)


@contextlib.contextmanager
def sampled_deform_convs(model: nn.Module):
    """While exporting, every torchvision DeformConv2d (FaPN's alignment) computes by sampling.

    torchvision's deform_conv2d has no form in the TorchScript exporter, and ONNX's DeformConv needs
    opset 19 (onnxruntime 1.31 runs it from the dynamo exporter); GridSample + Conv are opset 16,
    so the graph stays at OPSET and runs in TensorRT and onnxruntime alike.
    """
    swapped = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
               if isinstance(child, DeformConv2d)]
    for parent, name, child in swapped:
        setattr(parent, name, SampledDeformConv(child))
    try:
        yield model
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def export(model: DeployModel, path: str, height: int = 640, width: int = 640, batch_size: int = 1,
           dynamic: bool = False) -> str:
    """Trace `model` to an opset-17 ONNX file at `path` (fixed H x W; batch fixed or dynamic)."""
    check_input_size(height, width, size_divisibility(model.model))
    images, sizes = example_inputs(batch_size, height, width)
    dynamic_axes = {name: {0: "N"} for name in INPUT_NAMES + OUTPUT_NAMES} if dynamic else None
    # written next to `path` and renamed over it when complete: a failed or killed export leaves no partial file
    tmp = f"{path}.{os.getpid()}.tmp"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        with warnings.catch_warnings(), torch.no_grad(), fixed_size_forms(model), sampled_deform_convs(model):
            # tracer warnings about shape-derived Python values: the size is fixed by design
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (images, sizes), tmp, opset_version=OPSET, input_names=INPUT_NAMES,
                              output_names=OUTPUT_NAMES, dynamic_axes=dynamic_axes, do_constant_folding=True,
                              dynamo=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def op_types(path: str) -> list:
    """Sorted ONNX op types used in the graph at `path` (top-level graph)."""
    import onnx
    return sorted({node.op_type for node in onnx.load(path, load_external_data=False).graph.node})


def node_count(path: str) -> int:
    """Nodes of the top-level graph at `path`."""
    import onnx
    return len(onnx.load(path, load_external_data=False).graph.node)


def simplify(path: str) -> str:
    """Simplify the ONNX file in place with onnxslim or onnxsim; returns a message saying what ran."""
    import onnx
    try:
        import onnxslim
        onnx.save(onnxslim.slim(onnx.load(path)), path)
        return "simplified with onnxslim"
    except ImportError:
        pass
    try:
        import onnxsim
        model, ok = onnxsim.simplify(onnx.load(path))
        if not ok:
            return "onnxsim could not validate the simplified model; kept the original"
        onnx.save(model, path)
        return "simplified with onnxsim"
    except ImportError:
        return "--simplify: neither onnxslim nor onnxsim is installed (pip install onnxslim); left as exported"


def to_fp16(path: str) -> str:
    """Convert the weights and activations of the ONNX file to float16, keeping float32 inputs/outputs.

    Uses onnxconverter-common (an ImportError naming it otherwise). Meant for GPU runtimes; for
    TensorRT an fp32 ONNX built with `--fp16` is the usual route. Returns a message.
    """
    import onnx
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise ImportError("--fp16 needs onnxconverter-common (pip install onnxconverter-common); "
                          "for TensorRT, export fp32 and build the engine with --fp16 instead") from None
    model = onnx.load(path)
    own_casts = {node.name for node in model.graph.node if node.op_type == "Cast"}
    model = float16.convert_float_to_float16(model, keep_io_types=True)
    for node in model.graph.node:  # the model's own casts to float32 must now produce float16
        if node.name in own_casts:
            for attr in node.attribute:
                if attr.name == "to" and attr.i == onnx.TensorProto.FLOAT:
                    attr.i = onnx.TensorProto.FLOAT16
    onnx.save(model, path)
    return "converted to float16 (inputs/outputs stay float32)"


def onnxruntime_session(path: str, threads: int | None = None, cuda: bool = False, profile_prefix: str | None = None):
    """An onnxruntime session for `path`: CPU, or CUDA first when asked and available; `threads`
    intra-op threads (default: onnxruntime's); with `profile_prefix`, onnxruntime's profiler on, writing
    its JSON there (session.end_profiling() returns the file). A file onnxruntime cannot load is a
    ValueError naming it."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    providers = ["CPUExecutionProvider"]
    if cuda and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(path, options, providers=providers)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types; re-raised naming the file
        raise ValueError(f"cannot load ONNX model {path}: {e}") from None


def run_onnxruntime(session_or_path, images: torch.Tensor, sizes: torch.Tensor):
    """Run a deploy-interface graph; returns (labels, boxes, scores) as numpy arrays."""
    session = onnxruntime_session(session_or_path) if isinstance(session_or_path, str) else session_or_path
    return session.run(OUTPUT_NAMES, {"images": images.numpy(), "orig_target_sizes": sizes.numpy()})


def twin_fraction(reference, candidate, score_tol: float = 1e-3, box_tol: float = 0.5) -> float:
    """Fraction of `candidate` detections with a twin in `reference`, per image, averaged.

    Each argument is (labels [N, K], boxes [N, K, 4], scores [N, K]). A twin has the
    same label, |score difference| <= score_tol and every box coordinate within
    box_tol pixels. Order is not used: near-tied scores may swap ranks or cross the
    top-K boundary between runtimes.
    """
    ref_labels, ref_boxes, ref_scores = (np.asarray(a) for a in reference)
    labels, boxes, scores = (np.asarray(a) for a in candidate)
    matched = total = 0
    for i in range(labels.shape[0]):
        same_label = labels[i][:, None] == ref_labels[i][None, :]                       # [K, K_ref]
        close_score = np.abs(scores[i][:, None] - ref_scores[i][None, :]) <= score_tol
        close_box = (np.abs(boxes[i][:, None, :] - ref_boxes[i][None, :, :]) <= box_tol).all(-1)
        matched += int((same_label & close_score & close_box).any(1).sum())
        total += labels.shape[1]
    return matched / max(total, 1)


def check(path: str, model: DeployModel, height: int, width: int, batch_size: int, top_k: int = 100,
          score_tol: float = 1e-3, box_tol: float = 0.5) -> dict:
    """onnx.checker, then onnxruntime vs PyTorch on the same random input. Returns a summary dict."""
    import onnx
    onnx.checker.check_model(path, full_check=True)
    images, sizes = example_inputs(batch_size, height, width, seed=1)
    with torch.no_grad():
        expected = [t.numpy() for t in model(images, sizes)]
    got = run_onnxruntime(path, images, sizes)
    top = lambda outs: [o[:, :top_k] for o in outs]  # noqa: E731 - scores come sorted
    return {
        "top_k": top_k,
        "score_tol": score_tol,
        "box_tol": box_tol,
        "matched_fraction": twin_fraction(top(expected), top(got), score_tol, box_tol),
        "max_score_diff": float(np.abs(expected[2] - got[2]).max()),
        "op_types": op_types(path),
        "nodes": node_count(path),
    }


def prepare_output_path(path: str) -> str:
    """Check that an output file can be written at `path` before any work is done (creates nothing;
    rtdetr_fine/cli.py: check_output_file); errors name the path."""
    return check_output_file(path, "output file")
