"""TensorRT latency of an exported RT-DETR(+FINE) ONNX file (from export_onnx.py).

Builds an engine (fp16 by default, or fp32) with the TensorRT Python API, then
times inference on random inputs with CUDA events: median and mean latency and
FPS over --runs after --warmup. Needs a GPU with `tensorrt` and `torch` (CUDA)
installed; elsewhere it says so and exits with status 2.

    python export_onnx.py -c configs/rtdetr_r18_fine.yml -r ckpt.pth -o model.onnx
    python tools/trt_benchmark.py model.onnx --fp16 --batch-size 1 --runs 200

The same measurement with NVIDIA's trtexec (ships with TensorRT):

    trtexec --onnx=model.onnx --fp16 --saveEngine=model.engine \\
            --shapes=images:1x3x640x640,orig_target_sizes:1x2 \\
            --warmUp=500 --iterations=1000 --useCudaGraph --noDataTransfers

(--shapes is needed only for a graph exported with --dynamic; drop --fp16 for
fp32. trtexec reports the GPU compute time, comparable to "latency" here.)
"""
import argparse
import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from rtdetr_fine import cli  # noqa: E402


def missing_requirements():
    """Why TensorRT benchmarking cannot run here, or None."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return ('TensorRT is not installed (the project\'s "trt" extra: pip install ".[trt]" from the repository, '
                "or pip install tensorrt; on a machine with an NVIDIA GPU)")
    try:
        import torch
    except ImportError:
        return "PyTorch is needed for the CUDA buffers"
    if not torch.cuda.is_available():
        return "no CUDA GPU is available"
    return None


def build_engine(onnx_path, fp16=True, batch_size=1, workspace_gib=4, log=print):
    """Parse the ONNX file and build a serialized engine; returns (runtime, engine)."""
    import tensorrt as trt
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, "rb") as f:
        if not parser.parse(f.read()):
            errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse {onnx_path}:\n{errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_gib << 30)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):  # fixes a dynamic batch at --batch-size
        tensor = network.get_input(i)
        shape = [batch_size if d < 0 else d for d in tensor.shape]
        profile.set_shape(tensor.name, shape, shape, shape)
    config.add_optimization_profile(profile)
    log(f"building {'fp16' if fp16 else 'fp32'} engine from {onnx_path} ...")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT engine build failed (see the log above)")
    runtime = trt.Runtime(logger)
    return runtime, runtime.deserialize_cuda_engine(serialized)


def allocate(engine, context, batch_size, height, width):
    """CUDA tensors for every engine input/output, bound to `context`."""
    import tensorrt as trt
    import torch
    dtypes = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
              trt.int64: torch.int64, trt.bool: torch.bool}
    buffers = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            shape = [batch_size if d < 0 else d for d in engine.get_tensor_shape(name)]
            context.set_input_shape(name, shape)
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        shape = tuple(context.get_tensor_shape(name))
        buffers[name] = torch.zeros(shape, dtype=dtypes[engine.get_tensor_dtype(name)], device="cuda")
        context.set_tensor_address(name, buffers[name].data_ptr())
    if "images" in buffers:
        buffers["images"].uniform_()
    if "orig_target_sizes" in buffers:
        buffers["orig_target_sizes"][:] = torch.tensor([width, height])
    return buffers


def benchmark(engine, batch_size, runs=200, warmup=50):
    """Latency statistics (ms) of context.execute_async_v3 on one CUDA stream."""
    import torch
    context = engine.create_execution_context()
    height, width = engine.get_tensor_shape("images")[-2:]
    buffers = allocate(engine, context, batch_size, height, width)  # noqa: F841 - keeps them alive
    stream = torch.cuda.Stream()
    for _ in range(warmup):
        context.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        context.execute_async_v3(stream.cuda_stream)
        end.record(stream)
        end.synchronize()
        times.append(start.elapsed_time(end))
    median = statistics.median(times)
    return {"median_ms": median, "mean_ms": statistics.fmean(times), "min_ms": min(times),
            "fps": 1000.0 * batch_size / median, "runs": runs, "batch_size": batch_size}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("onnx", help="ONNX file from export_onnx.py")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", dest="fp16", action="store_true", default=True, help="fp16 engine (default)")
    precision.add_argument("--fp32", dest="fp16", action="store_false", help="fp32 engine")
    p.add_argument("--batch-size", type=int, default=1, help="batch for a --dynamic export (default 1)")
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--workspace", type=int, default=4, help="builder workspace in GiB (default 4)")
    return p.parse_args(argv)


def work(argv=None):
    """The command line's work; main() runs it behind the error boundary (rtdetr_fine/cli.py)."""
    args = parse_args(argv)
    reason = missing_requirements()
    if reason:
        print(f"TensorRT benchmark not run: {reason}. The equivalent trtexec command is in this "
              f"script's docstring (python {sys.argv[0]} --help).", file=sys.stderr)
        return 2
    if args.runs < 1 or args.warmup < 0 or args.batch_size < 1 or args.workspace < 1:
        raise cli.UserError("--runs, --batch-size and --workspace must be >= 1, --warmup >= 0")
    if not os.path.isfile(args.onnx):
        raise FileNotFoundError(f"ONNX file not found: {args.onnx}")
    try:
        _, engine = build_engine(args.onnx, args.fp16, args.batch_size, args.workspace)
        stats = benchmark(engine, args.batch_size, args.runs, args.warmup)
    except RuntimeError as e:   # TensorRT's build / runtime failures: one line, as the other errors
        raise cli.UserError(str(e)) from None
    print(f"{args.onnx}: {'fp16' if args.fp16 else 'fp32'}, batch {stats['batch_size']}: "
          f"median {stats['median_ms']:.3f} ms, mean {stats['mean_ms']:.3f} ms, min {stats['min_ms']:.3f} ms, "
          f"{stats['fps']:.1f} FPS over {stats['runs']} runs")
    return 0


def main(argv=None) -> int:
    """Exit code 0 on success; a user error is one line on stderr and exit code 1."""
    return cli.run_main(work, argv, prog="trt_benchmark.py")


if __name__ == "__main__":
    sys.exit(main())
