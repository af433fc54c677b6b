"""effc's lossless `default` pipeline against onnxslim, onnxsim and onnxoptimizer on the zoo models.

For each model and each tool that installs: node count after, ONNX Runtime latency after (median over all
timed runs; candidates measured interleaved, round by round, in one process, ORT's own graph optimizations on
as users run it), and max output difference from the original relative to the output scale (random inputs;
the encoder at two sequence lengths). The note says whether ONNX Runtime, after its own optimizations, runs the
same kernels for a tool's model as for effc's: where it does, a latency difference is measurement noise.
Prints a table and writes JSON.

    python benchmarks/bench_simplify.py [digits resnet18 mobilenetv2 encoder] [--repeat 30] [--rounds 3] [--json out.json]  (default: $TMPDIR/effc_simplify.json)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from effc import optimize
from effc.ir import load_model
from effc.onnx_runtime import ort_session, random_inputs, run_session
from effc.pipeline.context import Context
from effc.zoo import get


def simplifiers() -> dict:
    """The tools that import here, each as proto -> proto."""
    tools = {}
    try:
        import onnxslim
        tools["onnxslim"] = lambda proto: onnxslim.slim(proto)
    except ImportError:
        pass
    try:
        import onnxsim
        tools["onnxsim"] = lambda proto: onnxsim.simplify(proto)[0]
    except ImportError:
        pass
    try:
        import onnxoptimizer
        tools["onnxoptimizer"] = lambda proto: onnxoptimizer.optimize(proto, onnxoptimizer.get_fuse_and_elimination_passes())
    except ImportError:
        pass
    return tools


def effc_default(proto: onnx.ModelProto) -> onnx.ModelProto:
    return optimize(load_model(proto), "default", Context(verify=True)).model.to_proto()


def max_relative_diff(reference: list[dict], candidate: list[dict]) -> float:
    worst = 0.0
    for ref, cand in zip(reference, candidate):
        for name, r in ref.items():
            scale = max(float(np.abs(r).max()), 1e-12)
            worst = max(worst, float(np.abs(cand[name].astype(np.float64) - r).max()) / scale)
    return worst


def ort_kernels(proto: onnx.ModelProto) -> Counter:
    """How many nodes of each op type ONNX Runtime runs after its own graph optimizations (what latency depends on)."""
    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return Counter(node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node)


def kernel_difference(ours: Counter, theirs: Counter) -> str:
    """'same ORT graph as effc', or what ORT runs for them instead of what it runs for effc."""
    if ours == theirs:
        return "same ORT graph as effc"
    more = ", ".join(f"{n} {op}" for op, n in sorted((theirs - ours).items()))
    fewer = ", ".join(f"{n} {op}" for op, n in sorted((ours - theirs).items()))
    return f"ORT runs {more or 'nothing'} more, {fewer or 'nothing'} fewer than for effc"


def bench_model(name: str, repeat: int, rounds: int) -> list[dict]:
    proto = onnx.load(get(name).onnx_path)
    specs = load_model(proto).input_specs()
    feeds = [random_inputs(specs, seed=s, dim_value=v) for s, v in ((0, 1), (1, 7))]
    candidates = {"original": proto, "effc": None, **{k: None for k in simplifiers()}}
    errors, seconds = {}, {}
    for tool, fn in {"effc": effc_default, **simplifiers()}.items():
        start = time.perf_counter()
        try:
            candidates[tool] = fn(onnx.load(get(name).onnx_path))
        except Exception as exc:  # noqa: BLE001 - a tool failing on a model is a result, not a crash
            errors[tool] = str(exc).splitlines()[0][:120]
        seconds[tool] = time.perf_counter() - start
    sessions = {tool: ort_session(p) for tool, p in candidates.items() if p is not None}
    kernels = {tool: ort_kernels(p) for tool, p in candidates.items() if p is not None}
    outs = {tool: [run_session(s, f) for f in feeds] for tool, s in sessions.items()}
    timings = {tool: [] for tool in sessions}
    per_round = max(1, repeat // rounds)
    for _ in range(rounds):
        for tool, session in sessions.items():
            names = [o.name for o in session.get_outputs()]
            session.run(names, feeds[0])
            for _ in range(per_round):
                start = time.perf_counter()
                session.run(names, feeds[0])
                timings[tool].append((time.perf_counter() - start) * 1e3)
    rows = []
    for tool, p in candidates.items():
        row = {"model": name, "tool": tool, "nodes": None, "latency_ms": None, "max_rel_diff": None,
               "seconds": round(seconds.get(tool, 0.0), 2), "error": errors.get(tool)}
        if p is not None:
            row.update(nodes=len(p.graph.node), latency_ms=round(float(np.median(timings[tool])), 3),
                       runs=len(timings[tool]), max_rel_diff=max_relative_diff(outs["original"], outs[tool]),
                       ort_kernels=dict(kernels[tool]), ort_graph=kernel_difference(kernels["effc"], kernels[tool]))
        rows.append(row)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["digits", "resnet18", "mobilenetv2", "encoder"])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=str(Path(tempfile.gettempdir()) / "effc_simplify.json"))
    args = parser.parse_args(argv)
    rows = [row for name in args.models for row in bench_model(name, args.repeat, args.rounds)]
    print(f"{'model':12} {'tool':14} {'nodes':>6} {'ORT ms':>8} {'vs orig':>8} {'max rel diff':>13}  note")
    for row in rows:
        base = next(r for r in rows if r["model"] == row["model"] and r["tool"] == "original")
        if row["nodes"] is None:
            print(f"{row['model']:12} {row['tool']:14} {'-':>6} {'-':>8} {'-':>8} {'-':>13}  failed: {row['error']}")
            continue
        ratio = row["latency_ms"] / base["latency_ms"]
        print(f"{row['model']:12} {row['tool']:14} {row['nodes']:6d} {row['latency_ms']:8.3f} {ratio:7.2f}x "
              f"{row['max_rel_diff']:13.2e}  {'' if row['tool'] == 'effc' else row['ort_graph']}")
    Path(args.json).write_text(json.dumps(rows, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
