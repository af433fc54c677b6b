"""Structured pruning: MACs, file size, ONNX Runtime latency and accuracy/drift at 30% and 50% of channels.

Run from the repository root: `python benchmarks/bench_prune.py [--quick] [--json out.json]`.
Latency: the unpruned and pruned sessions run in the same process, interleaved, one inference at a
time; the ratio is of medians (unpruned / pruned, so > 1 is faster). digits reports accuracy on its
test set; ResNet-18 and MobileNetV2 have random weights, so they report the output cosine (minimum over
images) and relative L2 error against the unpruned model on 16 eval images instead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import effc
from effc.calib import CalibrationData
from effc.ir import load_model
from effc.ir.metrics import model_stats
from effc.onnx_runtime import compare_outputs, ort_session
from effc.passes.prune.sensitivity import relative_drift
from effc.zoo import get

CASES = [  # (model, spec); main() adds an allocation from the sensitivity analysis
    ("digits", "prune(ratio=0.3,reconstruct=false)"), ("digits", "prune(ratio=0.3)"),
    ("digits", "prune(ratio=0.5,reconstruct=false)"), ("digits", "prune(ratio=0.5)"),
    ("resnet18", "prune(ratio=0.3,reconstruct=false)"), ("resnet18", "prune(ratio=0.3,round_to=1,reconstruct=false)"),
    ("resnet18", "prune(ratio=0.5,reconstruct=false)"), ("resnet18", "prune(ratio=0.5)"),
    ("mobilenetv2", "prune(ratio=0.3,reconstruct=false)"), ("mobilenetv2", "prune(ratio=0.5,reconstruct=false)"),
    ("mobilenetv2", "prune(ratio=0.5)"),
]


def interleaved_latency(sessions, feeds, repeats: int) -> list[float]:
    """Median ms of each session, timed in turns so load on the machine hits them alike."""
    for s in sessions:
        for _ in range(3):
            s.run(None, feeds)
    times = [[] for _ in sessions]
    for _ in range(repeats):
        for i, s in enumerate(sessions):
            start = time.perf_counter()
            s.run(None, feeds)
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) * 1e3 for t in times]


def accuracy(model, name: str) -> float:
    data = np.load(get(name).eval_path)
    logits = ort_session(model).run(None, {"input": data["input"]})[0]
    return float(np.mean(logits.argmax(axis=1) == data["labels"]))


def run_case(name: str, spec: str, repeats: int) -> dict:
    zoo = get(name)
    base = load_model(zoo.onnx_path)
    ctx = effc.Context(calibration=CalibrationData.load(zoo.calib_path))
    start = time.perf_counter()
    pruned = effc.optimize(load_model(zoo.onnx_path), spec, ctx).model
    seconds = time.perf_counter() - start
    before, after = model_stats(base), model_stats(pruned)
    feeds = {"input": np.load(zoo.eval_path)["input"][:1]}
    base_ms, pruned_ms = interleaved_latency([ort_session(base), ort_session(pruned)], feeds, repeats)
    row = {"model": name, "spec": spec, "seconds": round(seconds, 1), "macs_ratio": after.macs / before.macs,
           "params_ratio": after.params / before.params, "file_ratio": after.file_bytes / before.file_bytes,
           "ort_ms": base_ms, "pruned_ms": pruned_ms, "speedup": base_ms / pruned_ms}
    if zoo.has_labels:
        row["accuracy"] = accuracy(base, name)
        row["pruned_accuracy"] = accuracy(pruned, name)
    else:
        images = np.load(zoo.eval_path)["input"][:16]
        sessions = (ort_session(base), ort_session(pruned))
        reference, candidate = ([s.run(None, {"input": x[None]}) for x in images] for s in sessions)
        row["rel_l2"] = relative_drift(reference, candidate)
        row["cosine"] = compare_outputs([{"y": r[0]} for r in reference], [{"y": c[0]} for c in candidate]).cosine
    return row


def allocated_spec(name: str, target_macs: float) -> str:
    """The per-layer spec that `prune(analyze=true)` allocates for `target_macs`, without reconstruction."""
    zoo = get(name)
    ctx = effc.Context(calibration=CalibrationData.load(zoo.calib_path))
    effc.optimize(load_model(zoo.onnx_path), f"prune(analyze=true,target_macs={target_macs},samples=8)", ctx)
    return ctx.reports["prune"]["spec"].replace(")", ",reconstruct=false)")


def table(rows: list[dict]) -> str:
    lines = ["| model | spec | MACs | params | file | ORT ms (orig → pruned) | speedup | quality | prune time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        quality = (f"acc {r['accuracy']:.3f} → {r['pruned_accuracy']:.3f}" if "accuracy" in r
                   else f"cos {r['cosine']:.3f}, rel L2 err {r['rel_l2']:.2f}")
        lines.append(f"| {r['model']} | `{r['spec']}` | {r['macs_ratio']:.3f} | {r['params_ratio']:.3f} | "
                     f"{r['file_ratio']:.3f} | "
                     f"{r['ort_ms']:.3f} → {r['pruned_ms']:.3f} | {r['speedup']:.2f}× | {quality} | {r['seconds']}s |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits only, fewer repeats")
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    cases = [c for c in CASES if c[0] == "digits"] if args.quick else list(CASES)
    rows = []
    if not args.quick:  # same MACs as uniform 50% on ResNet-18, spread by the sensitivity analysis
        cases.append(("resnet18", allocated_spec("resnet18", 0.73)))
    for name, spec in cases:
        rows.append(run_case(name, spec, 20 if args.quick else args.repeats))
        print(f"{name} {spec}: {rows[-1]['speedup']:.2f}x", file=sys.stderr)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
