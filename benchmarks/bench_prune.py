"""Structured pruning: MACs, file size, ONNX Runtime latency and quality at 30% and 50% of channels.

Run from the repository root: `python benchmarks/bench_prune.py [--quick] [--models digits,glyphs_vgg,ocr_cls,ocr_rec]
[--rec-lines 60] [--json out.json]`. Latency: the unpruned and pruned sessions run in the same process, interleaved,
one inference at a time (batch 1); the ratio is of medians (unpruned / pruned, so > 1 is faster).

What the quality columns mean:
- digits (360 labelled test images) and glyphs_vgg (VGG-style CNN trained on rendered 32x32 glyphs, 2,000 test
  images in held-out fonts): top-1 accuracy against the labels, unpruned → pruned, and the drop in points;
- ocr_cls (PP-OCR direction classifier): accuracy on all 600 rendered evaluation lines;
- ocr_rec (PP-OCRv4 recogniser; slow, only with `--models ...,ocr_rec`): char_accuracy on `--rec-lines` lines;
- resnet18, mobilenetv2: random weights, so accuracy means nothing: their quality cell reads "random weights: drift
  only, not accuracy"; they are there for MACs and latency.
Every row also gives the drift against the unpruned model on 16 eval samples: the minimum output cosine over
samples and the relative L2 error. `--quick` runs digits only, with fewer repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from bench_trained import METRIC, REC_LINES, evaluation, input_key, latency_feed, quality_cells, quality_note, score, \
    trained_quality, zoo_entry

import effc
from effc.calib import CalibrationData
from effc.ir import load_model
from effc.ir.metrics import model_stats
from effc.onnx_runtime import compare_outputs, ort_session
from effc.passes.prune.sensitivity import relative_drift

CASES = [  # (model, spec); main() adds an allocation from the sensitivity analysis
    ("digits", "prune(ratio=0.3,reconstruct=false)"), ("digits", "prune(ratio=0.3)"),
    ("digits", "prune(ratio=0.5,reconstruct=false)"), ("digits", "prune(ratio=0.5)"),
    ("resnet18", "prune(ratio=0.3,reconstruct=false)"), ("resnet18", "prune(ratio=0.3,round_to=1,reconstruct=false)"),
    ("resnet18", "prune(ratio=0.5,reconstruct=false)"), ("resnet18", "prune(ratio=0.5)"),
    ("mobilenetv2", "prune(ratio=0.3,reconstruct=false)"), ("mobilenetv2", "prune(ratio=0.5,reconstruct=false)"),
    ("mobilenetv2", "prune(ratio=0.5)"),
    ("glyphs_vgg", "prune(ratio=0.3,reconstruct=false)"), ("glyphs_vgg", "prune(ratio=0.3)"),
    ("glyphs_vgg", "prune(ratio=0.5)"),
    ("ocr_cls", "prune(ratio=0.3,reconstruct=false)"), ("ocr_cls", "prune(ratio=0.3)"), ("ocr_cls", "prune(ratio=0.5)"),
    ("ocr_rec", "prune(ratio=0.3)"), ("ocr_rec", "prune(ratio=0.5)"),
]
SLOW = ("ocr_rec",)  # run only when --models names them


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


def run_case(name: str, spec: str, repeats: int, rec_lines: int = REC_LINES) -> dict:
    zoo = zoo_entry(name)
    base = load_model(zoo.onnx_path)
    ctx = effc.Context(calibration=CalibrationData.load(zoo.calib_path))
    start = time.perf_counter()
    pruned = effc.optimize(load_model(zoo.onnx_path), spec, ctx).model
    seconds = time.perf_counter() - start
    before, after = model_stats(base), model_stats(pruned)
    data = evaluation(name, rec_lines if name == "ocr_rec" else None) if name in METRIC else None
    key = input_key(name) if data is not None else "input"
    images = data[key] if data is not None else np.load(zoo.eval_path)["input"]
    feeds = latency_feed(name, data) if data is not None else {"input": images[:1]}
    sessions = (ort_session(base), ort_session(pruned))
    base_ms, pruned_ms = interleaved_latency(list(sessions), feeds, repeats)
    row = {"model": name, "spec": spec, "seconds": round(seconds, 1), "macs_ratio": after.macs / before.macs,
           "params_ratio": after.params / before.params, "file_ratio": after.file_bytes / before.file_bytes,
           "ort_ms": base_ms, "pruned_ms": pruned_ms, "speedup": base_ms / pruned_ms, "note": quality_note(name, data)}
    reference, candidate = ([s.run(None, {key: x[None]}) for x in images[:16]] for s in sessions)
    row["rel_l2"] = relative_drift(reference, candidate)
    row["cosine"] = compare_outputs([{"y": r[0]} for r in reference], [{"y": c[0]} for c in candidate]).cosine
    if data is not None:
        row.update(trained_quality(name, pruned, data, score(name, base, data)))
    return row


def allocated_spec(name: str, target_macs: float) -> str:
    """The per-layer spec that `prune(analyze=true)` allocates for `target_macs`, without reconstruction."""
    zoo = zoo_entry(name)
    ctx = effc.Context(calibration=CalibrationData.load(zoo.calib_path))
    effc.optimize(load_model(zoo.onnx_path), f"prune(analyze=true,target_macs={target_macs},samples=8)", ctx)
    return ctx.reports["prune"]["spec"].replace(")", ",reconstruct=false)")


def table(rows: list[dict]) -> str:
    lines = ["| model | spec | MACs | params | file | ORT ms (orig → pruned) | speedup | quality metric | "
             "unpruned → pruned | drop (points) | drift: min cos, rel L2 err | prune time |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | `{r['spec']}` | {r['macs_ratio']:.3f} | {r['params_ratio']:.3f} | "
                     f"{r['file_ratio']:.3f} | {r['ort_ms']:.3f} → {r['pruned_ms']:.3f} | {r['speedup']:.2f}× | "
                     f"{quality_cells(r)} | cos {r['cosine']:.3f}, rel L2 err {r['rel_l2']:.2f} | {r['seconds']}s |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits only (unless --models), fewer repeats")
    parser.add_argument("--models", help="comma-separated models of CASES (default: all but ocr_rec; "
                        "ocr_rec only when named)")
    parser.add_argument("--rec-lines", type=int, default=REC_LINES, help="evaluation lines for ocr_rec")
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.models:
        models = args.models.split(",")
    else:
        models = ["digits"] if args.quick else list(dict.fromkeys(m for m, _ in CASES if m not in SLOW))
    cases = [c for c in CASES if c[0] in models]
    rows = []
    if not args.quick and "resnet18" in models:  # same MACs as uniform 50% on ResNet-18, spread by the sensitivity analysis
        cases.append(("resnet18", allocated_spec("resnet18", 0.73)))
    for name, spec in cases:
        rows.append(run_case(name, spec, 20 if args.quick else args.repeats, args.rec_lines))
        print(f"{name} {spec}: {rows[-1]['speedup']:.2f}x", file=sys.stderr, flush=True)
    print("Quality columns:")
    print("\n".join(dict.fromkeys(r["note"] for r in rows)))
    print()
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
