"""Models in the wild, model by model: inspect, optimize --verify, compile x86, run vs ONNX Runtime (max abs diff).

The corpus: the onnx package's light models (old opsets, full-size compute with constant weights) and the digits zoo
model. Each step goes through the `effc` CLI in this process; a step's exit code is in the table. The machine is
shared: the seconds are noisy and only there to size CI.

    PYTHONPATH=. python benchmarks/bench_corpus.py [--only NAME ...] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner

from effc.cli import cli

LIGHT = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"


def corpus() -> dict[str, Path]:
    models = {p.stem.removeprefix("light_"): p for p in sorted(LIGHT.glob("light_*.onnx"))}
    digits = Path(__file__).resolve().parents[1] / "effc" / "zoo" / "digits" / "digits.onnx"
    if digits.exists():
        models["digits"] = digits
    return models


def step(*args) -> tuple[int, str, float]:
    start = time.perf_counter()
    result = CliRunner().invoke(cli, [str(a) for a in args])
    last = (result.stderr.strip().splitlines() or [""])[-1] if result.exit_code else ""
    return result.exit_code, last, time.perf_counter() - start


def run_one(name: str, path: Path, work: Path) -> dict:
    from effc.artifact import load_artifact
    from effc.ir import load_model
    from effc.onnx_runtime import random_inputs, run_model

    row = {"model": name}
    row["inspect"], _, _ = step("inspect", path, "--no-layers")
    opt = work / f"{name}.opt.onnx"
    row["optimize --verify"], why, row["optimize_s"] = step("optimize", path, "-o", opt, "--verify")
    art = work / f"{name}.effc"
    spec = load_model(path).input_specs()[0]
    pins = [] if spec.is_static else ["--input-shape", f"{spec.name}=" + ",".join(str(d if isinstance(d, int) else 1) for d in spec.shape)]
    row["compile"], why2, row["compile_s"] = step("compile", path, "-o", art, *pins)
    row["note"] = why or why2
    if row["compile"] == 0:
        model = load_model(path, {spec.name: [int(v) for v in pins[1].split("=")[1].split(",")]} if pins else None)
        feeds = random_inputs(model.input_specs(), seed=0)
        start = time.perf_counter()
        got = load_artifact(art)(feeds)
        row["run_s"] = time.perf_counter() - start
        want = run_model(model, feeds)
        row["max_abs_diff"] = max(float(np.max(np.abs(got[k].astype(np.float64) - v))) for k, v in want.items())
        row["run"] = 0
    shutil.rmtree(art, ignore_errors=True)  # AlexNet's constant weights make a 230 MiB artifact
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    models = corpus()
    work = Path(tempfile.mkdtemp(prefix="effc-corpus-"))
    print("| model | inspect | optimize --verify | compile x86 | run vs ORT max abs diff | compile s | note |")
    print("|---|---|---|---|---|---|---|")
    try:
        for name, path in models.items():
            if args.only and name not in args.only:
                continue
            r = run_one(name, path, work)
            diff = f"{r['max_abs_diff']:.3g}" if "max_abs_diff" in r else "-"
            print(f"| {name} | {r['inspect']} | {r['optimize --verify']} | {r['compile']} | {diff} | "
                  f"{r.get('compile_s', 0):.1f} | {r['note'][:80]} |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
