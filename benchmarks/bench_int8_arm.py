"""int8 against float on 64-bit ARM, as aarch64 instructions executed per inference under qemu-aarch64.

This host has no ARM core to time, so the figure is the emulated instruction count of one call of the model on one
thread (effc/runners/qemu_icount.py: a qemu plugin counts between marks around each call), which is deterministic
to a fraction of a percent. It is not cycles: an `sdot` counts as one instruction like an `add`, so a dot kernel's
win shows undiminished, and memory stalls do not show at all. Outputs of the int8 artifact are compared with ONNX
Runtime on effc's int8 ONNX model (one image: each run starts the emulator, about 6 s), both as ORT optimizes it
(its fused integer kernels) and as written (graph optimizations off: the QDQ graph's float semantics); the
difference between ORT's two sessions is the floor that rounding flips in deep models set. The integer
reference is ORT on the model's uint8 twin (onnx_runtime.uint8_activation_twin): ORT's x86 session of int8
activations runs some convs (depthwise) as float, the twin's every conv as integer.

    python benchmarks/bench_int8_arm.py [--models digits,resnet18,mobilenetv2,encoder] [--cpus cortex-a76,neoverse-n2,generic]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from bench_compile import SHAPES  # run from benchmarks/
from bench_int8_tvm import output_step

import effc
from effc.calib import CalibrationData
from effc.onnx_runtime import ort_session, run_session, uint8_activation_twin
from effc.pipeline.context import Context
from effc.targets import get_target
from effc.zoo import get


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,resnet18,mobilenetv2,encoder")
    parser.add_argument("--cpus", default="cortex-a76,neoverse-n2,generic")
    parser.add_argument("--runs", type=int, default=2, help="counted calls per artifact (after one uncounted)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="effc-bench-arm-"))
    rows = []
    for name in args.models.split(","):
        zoo = get(name)
        model = effc.load_model(zoo.onnx_path, SHAPES[name])
        key = next(iter(SHAPES[name]))
        feeds = {key: np.load(zoo.eval_path)[key][:1]}
        for cpu in args.cpus.split(","):
            counts, artifacts = {}, {}
            for label, pipeline in (("float", "default"), ("int8", "int8")):
                ctx = Context(calibration=CalibrationData.load(zoo.calib_path))
                artifact = effc.compile(model, "arm", cpu=cpu, pipeline=pipeline, ctx=ctx,
                                        out=out / f"{name}.{cpu}.{label}.effc", source=str(zoo.onnx_path))
                counts[label] = int(np.median(artifact.runner.instructions_per_run([feeds[key]], runs=args.runs)))
                artifacts[label] = artifact
            int8 = artifacts["int8"]
            quantized = int8.passes.model
            first = quantized.graph.outputs[0].name
            ours = np.asarray(int8(feeds)[first])
            optimized = run_session(ort_session(quantized), feeds)[first]
            as_written = run_session(ort_session(quantized, optimize=False), feeds)[first]
            integer = run_session(ort_session(uint8_activation_twin(quantized)), feeds)[first]
            step = output_step(quantized)
            off = f"{100 * float(np.mean(np.abs(ours - optimized) > step * 1.001)):.3f}%" if step else "n/a"
            scale = float(np.abs(optimized).max()) or 1.0
            islands = int8.meta.get("integer_islands", [])
            rows.append([name, cpu, " ".join(get_target("arm", cpu).isa.int8_dot) or "neon", f"{counts['float'] / 1e6:.2f}",
                         f"{counts['int8'] / 1e6:.2f}", f"{counts['float'] / counts['int8']:.2f}x",
                         f"{sum(i['integer'] for i in islands)}/{len(islands)}", off,
                         f"{float(np.abs(ours - optimized).max()) / scale:.1e}",
                         f"{float(np.abs(ours - as_written).max()) / scale:.1e}",
                         f"{float(np.abs(optimized - as_written).max()) / scale:.1e}",
                         f"{float(np.abs(ours - integer).max()) / scale:.1e}",
                         "yes" if np.array_equal(ours.argmax(-1), optimized.argmax(-1)) else "no"])
            print("| " + " | ".join(rows[-1]) + " |", flush=True)
    print("\n| model | cpu | int8 dot | float M instr | int8 M instr | float/int8 | integer convs+matmuls "
          "| outputs > 1 step from ORT | max diff / output scale: vs ORT | vs ORT as written | ORT vs ORT as written "
          "| vs ORT on the uint8 twin | same argmax |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\nartifacts in {out}")


if __name__ == "__main__":
    main()
