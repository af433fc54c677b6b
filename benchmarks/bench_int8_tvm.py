"""TVM int8 (integer kernels, effc.backends.tvm.integer) against TVM float and ONNX Runtime on effc's int8 ONNX.

For each zoo model: effc's int8 pass for x86 (the zoo's calibration data), compiled by TVM; the float model
compiled by TVM; ONNX Runtime on the int8 ONNX model. Latency: medians of interleaved rounds (each round runs the
three back to back, `--repeat` calls each, after a pause). Agreement of TVM int8 with ORT int8 on the zoo's eval
inputs: the share of outputs more than one quantization step apart (the step of the output's last quantized
activation, or of the final integer product), top-1 agreement, max abs diff. Also the integer/float islands and
params.npz sizes.

    python benchmarks/bench_int8_tvm.py [--models resnet18,mobilenetv2,encoder] [--repeat 10] [--rounds 5] [--samples 16]
        [--cpu haswell] [--baseline DIR]

--baseline DIR: also time DIR/<model>.int8.effc (the int8 artifacts of an earlier build, e.g. this benchmark's
--out of another checkout) in the same interleaved rounds: before/after in one run.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
from pathlib import Path

import numpy as np
import onnx_graphsurgeon as gs
from bench_compile import SHAPES, interleaved_ms  # run from benchmarks/, as bench_cluster imports bench_prune

import effc
from effc.calib import CalibrationData
from effc.onnx_runtime import ort_session
from effc.pipeline.context import Context
from effc.zoo import get


def output_step(model) -> float:
    """The quantization step of the graph's first output: its producer's output scale if it is quantized, else the
    largest bias scale (sx * sw) of the integer product that produces it, else 0 (not known)."""
    out = model.graph.outputs[0]
    producer = out.inputs[0] if out.inputs else None
    if producer is not None and producer.op == "DequantizeLinear":
        return float(np.max(producer.inputs[1].values))
    if producer is not None and len(producer.inputs) > 2 and producer.inputs[2].inputs:
        dq = producer.inputs[2].inputs[0]
        if dq.op == "DequantizeLinear" and isinstance(dq.inputs[1], gs.Constant):
            return float(np.max(dq.inputs[1].values))
    return 0.0


def params_kib(folder: Path) -> float:
    data = np.load(folder / "params.npz")
    return sum(data[k].nbytes for k in data.files) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,mobilenetv2,encoder")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--samples", type=int, default=16, help="eval inputs compared against ORT int8")
    parser.add_argument("--out", default=None)
    parser.add_argument("--cpu", default=None, help="an x86 CPU LLVM knows (e.g. haswell: AVX2, no VNNI); default: this one")
    parser.add_argument("--baseline", default=None, help="a folder of <model>.int8.effc from an earlier build, timed alongside")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="effc-bench-int8-"))
    rows, islands = [], {}
    for name in args.models.split(","):
        zoo = get(name)
        model = effc.load_model(zoo.onnx_path, SHAPES[name])
        ctx = Context(calibration=CalibrationData.load(zoo.calib_path))
        int8 = effc.compile(model, "x86", cpu=args.cpu, pipeline="int8", ctx=ctx, out=out / f"{name}.int8.effc", source=str(zoo.onnx_path))
        floats = effc.compile(model, "x86", cpu=args.cpu, pipeline="default", out=out / f"{name}.float.effc", source=str(zoo.onnx_path))
        quantized = int8.passes.model
        session = ort_session(quantized)
        names = [o.name for o in session.get_outputs()]
        step = output_step(quantized)
        evals = np.load(zoo.eval_path)
        key = next(iter(SHAPES[name]))
        off = agree = total = 0
        worst = 0.0
        for i in range(min(args.samples, len(evals[key]))):
            feeds = {key: evals[key][i:i + 1]}
            ours, theirs = np.asarray(int8(feeds)[names[0]]), session.run(names, feeds)[0]
            diff = np.abs(ours - theirs)
            worst = max(worst, float(diff.max()))
            off += int(np.sum(diff > step * 1.001)) if step else 0
            total += diff.size
            agree += int(ours.reshape(-1).argmax() == theirs.reshape(-1).argmax()) if ours.ndim == 2 else \
                int(np.array_equal(ours.argmax(-1), theirs.argmax(-1)))
        samples = min(args.samples, len(evals[key]))
        feeds = {key: evals[key][:1]}
        runs = {"tvm_int8": functools.partial(int8, feeds), "tvm_float": functools.partial(floats, feeds),
                "ort_int8": functools.partial(session.run, names, feeds)}
        if args.baseline:
            runs["baseline_int8"] = functools.partial(effc.load_artifact(Path(args.baseline) / f"{name}.int8.effc"), feeds)
        ms = interleaved_ms(runs, args.repeat, args.rounds)
        meta = int8.meta
        integer = sum(1 for i in meta.get("integer_islands", []) if i["integer"])
        islands[name] = [i for i in meta.get("integer_islands", []) if not i["integer"]]
        rows.append([name, f"{ms['tvm_int8']:.3f}", f"{ms['tvm_float']:.3f}", f"{ms['ort_int8']:.3f}",
                     f"{ms['tvm_float'] / ms['tvm_int8']:.2f}x", f"{ms['ort_int8'] / ms['tvm_int8']:.2f}x",
                     f"{integer}/{len(meta.get('integer_islands', []))}",
                     f"{100 * off / max(total, 1):.3f}%" if step else "n/a", f"{agree}/{samples}", f"{worst:.1e}",
                     f"{params_kib(out / f'{name}.int8.effc'):.0f} / {params_kib(out / f'{name}.float.effc'):.0f}"]
                    + ([f"{ms['baseline_int8']:.3f}"] if args.baseline else []))
        print("| " + " | ".join(rows[-1]) + " |", flush=True)
    print()
    print("| model | TVM int8 (ms) | TVM float (ms) | ORT int8 (ms) | float/int8 | ORT/TVM int8 | integer convs+matmuls "
          "| outputs > 1 step | top-1 = ORT | max abs diff | params KiB int8 / float |" + (" baseline int8 (ms) |" if args.baseline else ""))
    print("|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if args.baseline else ""))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    for name, floats_left in islands.items():
        reasons: dict[str, int] = {}
        for island in floats_left:
            reasons[f"{island['op']}: {island['detail']}"] = reasons.get(f"{island['op']}: {island['detail']}", 0) + 1
        print(f"\n{name}: float islands: " + ("; ".join(f"{n}x {r}" for r, n in reasons.items()) or "none"))
    print(f"\nartifacts in {out}")


if __name__ == "__main__":
    main()
