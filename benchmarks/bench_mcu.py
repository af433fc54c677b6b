"""Microcontroller artifacts: memory against its bounds and emulated instructions per MAC, per model and core.

For each model (digits and ds_cnn, float and int8) and target (cortex-m4 on qemu mps2-an386, cortex-m7 on
mps2-an500): the arena against its lower bound (the most bytes live at once) and the naive sum (every tensor its
own buffer), flash (.text + .rodata + .data of the ELF) against the weight bytes, RAM (.data + .bss + the stack
used), the emulated instruction count of one run and per MAC (qemu -icount shift=0: instructions, not cycles),
and the agreement with ONNX Runtime running the model the passes produced (QDQ for int8) on `--samples` evaluation
inputs (max |diff| relative to the output scale, top-1). Instruction counts are deterministic, so one run each is enough; nothing here is timed on the host.

    python benchmarks/bench_mcu.py [--models digits ds_cnn] [--targets cortex-m4 cortex-m7] [--samples 8]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import effc
from effc.calib import CalibrationData
from effc.onnx_runtime import ort_session, run_session
from effc.pipeline.context import Context
from effc.profile.mcu import profile_mcu
from effc.zoo import get

SHAPES = {"digits": [1, 1, 8, 8], "ds_cnn": [1, 1, 49, 10]}
VARIANTS = {"float": "default", "int8": "default,int8"}


def compile_variant(name: str, variant: str, target: str, out: Path):
    """The artifact, and the model its passes produced (what ONNX Runtime runs beside it: QDQ for int8)."""
    model = get(name)
    ctx = Context(calibration=CalibrationData.load(model.calib_path)) if variant == "int8" else None
    artifact = effc.compile(str(model.onnx_path), target, pipeline=VARIANTS[variant], ctx=ctx, out=out,
                            input_shapes={"input": SHAPES[name]})
    return artifact, artifact.passes.model


def agreement(artifact, reference, name: str, samples: int) -> tuple[float, float]:
    """(max |diff| / output scale, top-1 agreement) against ONNX Runtime running `reference` on the first `samples`
    eval inputs."""
    session = ort_session(reference)
    inputs = np.load(get(name).eval_path)["input"][:samples]
    worst, same = 0.0, 0
    for x in inputs:
        got = artifact(input=x[None])["logits"]
        want = run_session(session, {"input": x[None]})["logits"]
        worst = max(worst, float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-6)))
        same += int(got.argmax() == want.argmax())
    return worst, same / len(inputs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--targets", nargs="+", default=["cortex-m4", "cortex-m7"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--samples", type=int, default=8, help="evaluation inputs compared with ONNX Runtime")
    args = parser.parse_args(argv)
    header = ("| model | target | arena / lower bound / naive (B) | flash / weights (B) | RAM (B) | stack (B) "
              "| instructions | per MAC | integer kernels | max rel diff | top-1 = ORT |")
    print(header)
    print("|" + "---|" * header.count(" | ") + "---|")
    with tempfile.TemporaryDirectory(prefix="bench-mcu-") as tmp:
        for name in args.models:
            for variant in args.variants:
                for target in args.targets:
                    folder = Path(tmp) / f"{name}.{variant}.{target}.effc"
                    artifact, reference = compile_variant(name, variant, target, folder)
                    p = profile_mcu(folder, repeat=1, inputs=get(name).eval_path)
                    rel, top1 = agreement(artifact, reference, name, args.samples)
                    integer = sum(k.arithmetic == "integer" for k in p.kernels)
                    ram = p.ram["data"] + p.ram["bss"] + p.ram["stack_used"]
                    print(f"| {name} {variant} | {target} | {p.arena['bytes']:,} / {p.arena['lower_bound']:,} / "
                          f"{p.arena['naive_sum']:,} | {p.flash['total']:,} / {p.weight_bytes:,} | {ram:,} | "
                          f"{p.ram['stack_used']:,} | {p.instructions:,.0f} | {p.instructions_per_mac:.2f} | "
                          f"{integer}/{len(p.kernels)} | {rel:.1e} | {top1:.0%} |", flush=True)
    print("\ninstructions: emulated instruction counts under qemu-system-arm -icount shift=0 (deterministic), not cycles")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
