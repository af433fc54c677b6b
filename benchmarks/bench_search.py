"""Fronts of `effc search`: digits (size and x86 latency, accuracy within 0.5 point), ResNet-18 on x86 (latency,
top-1 agreement with the float model >= 0.9; `resnet18` has random weights, `glyphs_resnet18` is trained on the
rendered glyphs at 64x64, effc/zoo/glyphs_resnet.py) and the DS-CNN keyword model on cortex-m4 under qemu (flash, static RAM,
emulated instructions; accuracy within 0.5 point), with the time each search took and each x86 point against ONNX
Runtime running the float model.

    python benchmarks/bench_search.py [--models digits,resnet18,ds_cnn,glyphs_resnet18] [--trials 24] [--out DIR]

The ratios in the table are measured in this run: the float model on ONNX Runtime is timed right after the search,
interleaved with the front's best point, on the same inputs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import effc
from effc.onnx_runtime import ort_session, random_inputs
from effc.units import human_bytes
from effc.zoo import get

SETUPS = {
    "digits": dict(budget="accuracy_drop<=0.005", metric="top1", objectives=("size", "latency"),
                   input_shapes={"input": [1, 1, 8, 8]}),
    "resnet18": dict(budget="accuracy>=0.9", metric="agreement", objectives=("latency",),
                     input_shapes={"input": [1, 3, 224, 224]}),
    "ds_cnn": dict(budget="accuracy_drop<=0.005", metric="top1", objectives=("flash", "ram", "latency"),
                   input_shapes={"input": [1, 1, 49, 10]}, target="cortex-m4"),
    # ResNet-18 trained on the glyphs (64x64 input): the int8 x pruning question on trained weights
    "glyphs_resnet18": dict(budget="accuracy>=0.9", metric="agreement", objectives=("latency",),
                            input_shapes={"input": [1, 3, 64, 64]},
                            recipe=str(Path(__file__).with_name("search_glyphs_resnet18.toml"))),
}


def zoo_model(name: str):
    """The zoo entry's files; the trained ResNet-18 is built on first use (about 6 minutes)."""
    if name == "glyphs_resnet18":
        from effc.zoo import glyphs_resnet

        return glyphs_resnet.get()
    return get(name)


def interleaved(artifact, session, feeds, repeat: int = 20, rounds: int = 5) -> tuple[float, float]:
    names = [o.name for o in session.get_outputs()]
    ours, theirs = [], []
    for _ in range(rounds):
        for run, times in ((lambda: artifact(feeds), ours), (lambda: session.run(names, feeds), theirs)):
            for _ in range(repeat):
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            time.sleep(0.05)
    return statistics.median(ours) * 1e3, statistics.median(theirs) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="digits,resnet18,ds_cnn")
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="effc-bench-search-"))
    for name in args.models.split(","):
        zoo, setup = zoo_model(name), dict(SETUPS[name])
        target = setup.pop("target", "x86")
        start = time.monotonic()
        front = effc.search(zoo.onnx_path, calib=zoo.calib_path, eval=zoo.eval_path, out=out / name, target=target,
                            trials=args.trials, seed=0, **setup)
        minutes = (time.monotonic() - start) / 60
        if target != "x86":
            print_mcu_front(name, front, minutes)
            continue
        model = effc.load_model(zoo.onnx_path, setup["input_shapes"])
        session = ort_session(model)
        feeds = random_inputs(model.input_specs())
        print(f"\n### {name}: {len(front.trials)} trials in {minutes:.1f} min, budget {front.budget} ({front.metric})\n")
        print("| point | quality | size | x86 ms | ORT float ms | speed-up vs ORT float | size vs float | pipeline |")
        print("|---|---|---|---|---|---|---|---|")
        for label, point in [("original", front.original), *((f"#{p.trial}", p) for p in front.points)]:
            ours, theirs = interleaved(effc.load_artifact(point.artifact), session, feeds)
            print(f"| {label} | {point.quality:.4f} | {human_bytes(point.size_bytes)} | {ours:.3f} | {theirs:.3f} | "
                  f"{theirs / ours:.2f}x | {front.original.size_bytes / point.size_bytes:.1f}x smaller | `{point.spec}` |",
                  flush=True)
        print(f"\nplot: {out / name / 'front.png'}")


def print_mcu_front(name: str, front, minutes: float) -> None:
    """Emulated figures (qemu -icount shift=0: instructions, not cycles) are deterministic: no ORT column."""
    base = front.original
    print(f"\n### {name} on {front.target}: {len(front.trials)} trials in {minutes:.1f} min, budget {front.budget} "
          f"({front.metric})\n")
    print("| point | quality | flash | static RAM | instructions | flash vs float | instructions vs float | pipeline |")
    print("|---|---|---|---|---|---|---|---|")
    for label, point in [("original", base), *((f"#{p.trial}", p) for p in front.points)]:
        print(f"| {label} | {point.quality:.4f} | {human_bytes(point.flash_bytes)} | {human_bytes(point.ram_bytes)} | "
              f"{point.latency_ms * 1e6:,.0f} | {base.flash_bytes / point.flash_bytes:.1f}x smaller | "
              f"{base.latency_ms / point.latency_ms:.2f}x fewer | `{point.spec}` |", flush=True)


if __name__ == "__main__":
    main()
