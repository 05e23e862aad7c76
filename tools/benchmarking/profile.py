"""--profile N: where each model's onnxruntime time goes, from onnxruntime's own profiler
(SessionOptions.enable_profiling).

Each model's ONNX file gets a profiling session of its own (same threads as the timing) and one untimed
run; then the models take turns, one run each, N times (a drift in the machine's speed hits all alike). The kernel time of every node is summed per module of the exported model
(the module path onnxruntime keeps in node names, e.g. model/encoder/fine.0 or model/backbone/res_layers.2)
and per op type, in ms per run. Nodes without a module path (layout reorders onnxruntime inserts, nodes
its fusions renamed) are summed under OTHER. The sum of node times is below the wall time of a run
(session overhead, threads waiting); compare modules within and across models of one profile, and
take latencies from the timing itself. Writes profile.json and profile.md next to benchmark.*.
"""
import glob
import json
import os
import tempfile
from collections import Counter

from rtdetr_fine import deploy

OTHER = "(no module path: onnxruntime's layout nodes and renamed fusions)"
SHOWN = 14   # modules per model in profile.md


def module_of(node_name: str, depth: int = 3) -> str:
    """'/model/encoder/fine.0/linear1/MatMul' -> 'model/encoder/fine.0'; nodes outside the model's modules
    (postprocessor included) by their first part; OTHER when the name has no module path."""
    parts = [p for p in node_name.split("/") if p]
    if len(parts) < 2 or parts[0] not in ("model", "postprocessor"):
        return OTHER
    return "/".join(parts[:depth]) if parts[0] == "model" else parts[0]


def node_times(events, runs: int) -> dict:
    """onnxruntime profile events -> {'runs', 'node_ms', 'modules', 'ops'} in ms per run, leaving out the
    session's first run (its first-run allocations)."""
    first = min((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                key=lambda e: e["ts"])
    modules, ops = Counter(), Counter()
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        if first["ts"] <= event["ts"] <= first["ts"] + first["dur"]:   # the untimed first run
            continue
        ms = event["dur"] / 1000 / runs
        modules[module_of(event["name"][:-len("_kernel_time")])] += ms
        ops[event.get("args", {}).get("op_name", "?")] += ms
    return {"runs": runs, "node_ms": sum(modules.values()), "modules": dict(modules.most_common()),
            "ops": dict(ops.most_common())}


def profile_models(models, runs: int, threads: int, log) -> None:
    """Adds result['ort_profile'] to every model with an ONNX graph (Candidate / OnnxFile). The models take
    turns run by run, as in the timing, so a drift in the machine's speed hits them alike."""
    profiled = [(m, getattr(m, "onnx_path", None) or m.result.get("onnx")) for m in models]
    profiled = [(m, path) for m, path in profiled if path]
    log(f"onnxruntime profiles: {runs} runs of {len(profiled)} models, in turns")
    with tempfile.TemporaryDirectory() as folder:
        sessions = []
        for i, (m, path) in enumerate(profiled):
            session = deploy.onnxruntime_session(path, threads, profile_prefix=os.path.join(folder, f"model{i}"))
            feed = {"images": m.images.numpy(), "orig_target_sizes": m.sizes.numpy()}
            session.run(None, feed)                                          # the untimed first run
            sessions.append((session, feed))
        for _ in range(runs):
            for session, feed in sessions:
                session.run(None, feed)
        for i, ((m, _), (session, _)) in enumerate(zip(profiled, sessions)):
            written = session.end_profiling()
            if not os.path.isabs(written):
                written = max(glob.glob(os.path.join(folder, f"model{i}*.json")))
            with open(written) as f:
                m.result["ort_profile"] = node_times(json.load(f), runs)


def profile_markdown(results) -> str:
    """profile.md: per model, its node time per run by module (the largest SHOWN) and by op type."""
    lines = ["onnxruntime's profiler, kernel time per run (ms), summed per module of the exported model; "
             "below the wall time of a run (tools/benchmarking/profile.py)."]
    for r in results:
        p = r.get("ort_profile")
        if not p:
            continue
        lines += ["", f"### {r['name']}: {p['node_ms']:.1f} ms of node time per run ({p['runs']} runs)", "",
                  "| module | ms | share |", "|---|---|---|"]
        for module, ms in list(p["modules"].items())[:SHOWN]:
            lines.append(f"| {module} | {ms:.2f} | {100 * ms / p['node_ms']:.1f}% |")
        rest = sum(list(p["modules"].values())[SHOWN:])
        if rest:
            lines.append(f"| (the other {len(p['modules']) - SHOWN} modules) | {rest:.2f} | "
                         f"{100 * rest / p['node_ms']:.1f}% |")
        top_ops = ", ".join(f"{op} {ms:.1f}" for op, ms in list(p["ops"].items())[:8])
        lines += ["", f"By op type (ms): {top_ops}"]
    return "\n".join(lines) + "\n"


def write_profile(report, out_dir) -> list:
    """profile.json (every model's modules and op types) and profile.md; returns their paths."""
    results = [{"name": r["name"], **r["ort_profile"]} for r in report["results"] if r.get("ort_profile")]
    paths = [os.path.join(out_dir, "profile.json"), os.path.join(out_dir, "profile.md")]
    with open(paths[0], "w") as f:
        json.dump(results, f, indent=2)
    with open(paths[1], "w") as f:
        f.write(profile_markdown(report["results"]))
    return paths
