"""Compile time and artifact size of every zoo model for x86 and arm, x86 latency beside ONNX Runtime.

    python benchmarks/bench_compile.py [--models digits,resnet18] [--repeat 5] [--out DIR]

Prints a markdown table. Latencies are medians of interleaved runs (artifact, ORT, artifact, ...), so machine load
hits both alike; the ratio is the figure to compare, not the milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import effc  # noqa: E402
from effc.artifact import compile_artifact, load_artifact  # noqa: E402
from effc.backends.targets import get_target  # noqa: E402
from effc.runtime import ort_session, random_inputs  # noqa: E402
from models.zoo import ZOO_NAMES, get  # noqa: E402

SHAPES = {"digits": {"input": [1, 1, 8, 8]}, "resnet18": {"input": [1, 3, 224, 224]},
          "mobilenetv2": {"input": [1, 3, 224, 224]}, "encoder": {"input_ids": [1, 16]}}


def interleaved_ms(artifact, session, feeds, repeat: int) -> tuple[float, float]:
    names = [o.name for o in session.get_outputs()]
    artifact(feeds), session.run(names, feeds)  # warm-up
    ours, theirs = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        artifact(feeds)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        session.run(names, feeds)
        theirs.append(time.perf_counter() - start)
    return 1e3 * statistics.median(ours), 1e3 * statistics.median(theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(ZOO_NAMES))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", default=None, help="Keep the artifacts here (default: a temporary folder).")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="effc-bench-"))
    print("| model | target | compile (s) | artifact (MiB) | library (MiB) | x86 median (ms) | ORT median (ms) | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        zoo = get(name)
        model = effc.load_model(zoo.onnx_path, SHAPES[name])
        optimized = effc.optimize(model, "default", effc.Context()).model
        for target in ("x86", "arm"):
            folder = out / f"{name}.{target}.effc"
            start = time.perf_counter()
            compile_artifact(optimized, get_target(target), folder, source=zoo.onnx_path, pipeline="default")
            seconds = time.perf_counter() - start
            size = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
            library = (folder / "model.so").stat().st_size / 2**20
            cells = [name, target, f"{seconds:.1f}", f"{size:.1f}", f"{library:.2f}", "-", "-", "-"]
            if target == "x86":
                feeds = random_inputs(model.input_specs())
                ours, theirs = interleaved_ms(load_artifact(folder), ort_session(zoo.onnx_path), feeds, args.repeat)
                cells[5:] = [f"{ours:.2f}", f"{theirs:.2f}", f"{ours / theirs:.1f}x"]
            print("| " + " | ".join(cells) + " |", flush=True)
    print(f"\nartifacts in {out}")


if __name__ == "__main__":
    main()
