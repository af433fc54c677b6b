"""Compile time and artifact size of every zoo model for x86 and arm, x86 latency beside ONNX Runtime.

    python benchmarks/bench_compile.py [--models digits,resnet18] [--targets x86,arm] [--repeat 10] [--rounds 5]
                                       [--db resnet18=DIR ...]

Prints a markdown table. Latencies are medians over alternating rounds (artifact x repeat, ORT x repeat, ...), so
machine load hits both alike; the ratio is the figure to compare, not the milliseconds. The artifacts use effc's
default CPU schedules, or for a model given `--db MODEL=DIR` an `effc tune` database (a row "x86 tuned" beside the
untuned one).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import effc
from effc.onnx_runtime import ort_session, random_inputs
from effc.zoo import ZOO_NAMES, get

SHAPES = {"digits": {"input": [1, 1, 8, 8]}, "resnet18": {"input": [1, 3, 224, 224]},
          "mobilenetv2": {"input": [1, 3, 224, 224]}, "encoder": {"input_ids": [1, 16]}}


def interleaved_ms(runs: dict, repeat: int, rounds: int) -> dict[str, float]:
    """{label: median ms} of `runs` ({label: no-argument callable}), timed in alternating rounds of `repeat`
    back-to-back calls each: a round keeps each runtime's thread pool awake the way a serving loop does, and
    alternating rounds spread machine load over all of them. Each round starts after a pause: ORT's workers spin on
    for a while after a run, and a parallel TVM kernel that starts then waits a scheduler slice (digits measured
    4 ms instead of 0.04) for a worker they hold off its core."""
    times: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(rounds):
        for label, run in runs.items():
            time.sleep(0.05)  # the other runtime's spinning workers go idle
            run()  # wake the pool
            for _ in range(repeat):
                start = time.perf_counter()
                run()
                times[label].append(time.perf_counter() - start)
    return {label: 1e3 * statistics.median(t) for label, t in times.items()}


def max_abs_diff(artifact, session, feeds) -> float:
    names = [o.name for o in session.get_outputs()]
    ours, theirs = artifact(feeds), session.run(names, feeds)
    return max(float(np.max(np.abs(np.asarray(ours[n]) - t))) for n, t in zip(names, theirs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(ZOO_NAMES))
    parser.add_argument("--repeat", type=int, default=10, help="Back-to-back calls per round.")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--targets", default="x86,arm")
    parser.add_argument("--out", default=None, help="Keep the artifacts here (default: a temporary folder).")
    parser.add_argument("--db", action="append", default=[], metavar="MODEL=DIR",
                        help="Also compile MODEL with this effc tune database (x86).")
    args = parser.parse_args()
    databases = dict(item.split("=", 1) for item in args.db)
    out = Path(args.out or tempfile.mkdtemp(prefix="effc-bench-"))
    print("| model | target | compile (s) | artifact (MiB) | library (MiB) | x86 median (ms) | ORT median (ms) | ratio "
          "| max abs diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        zoo = get(name)
        model = effc.load_model(zoo.onnx_path, SHAPES[name])
        runs = [(target, None) for target in args.targets.split(",")]
        if name in databases:
            runs.append(("x86", databases[name]))
        for target, database in runs:
            folder = out / f"{name}.{target}{'.tuned' if database else ''}.effc"
            artifact = effc.compile(model, target, pipeline="default", out=folder, source=str(zoo.onnx_path),
                                    tuning_db=database)
            seconds = artifact.meta["compile_seconds_total"]  # the backend's part, after the passes
            size = sum(f.stat().st_size for f in folder.iterdir()) / 2**20
            library = (folder / "model.so").stat().st_size / 2**20
            label = f"{target} tuned" if database else target
            cells = [name, label, f"{seconds:.1f}", f"{size:.1f}", f"{library:.2f}", "-", "-", "-", "-"]
            if target == "x86":
                feeds = random_inputs(model.input_specs())
                session = ort_session(zoo.onnx_path)
                names = [o.name for o in session.get_outputs()]
                runs = {"effc": functools.partial(artifact, feeds), "ort": functools.partial(session.run, names, feeds)}
                ms = interleaved_ms(runs, args.repeat, args.rounds)
                ours, theirs = ms["effc"], ms["ort"]
                cells[5:] = [f"{ours:.3f}", f"{theirs:.3f}", f"{ours / theirs:.2f}x",
                             f"{max_abs_diff(artifact, session, feeds):.1e}"]
            print("| " + " | ".join(cells) + " |", flush=True)
    print(f"\nartifacts in {out}")


if __name__ == "__main__":
    main()
