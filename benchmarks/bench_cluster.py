"""Weight sharing: raw file size, quality, ORT session start and latency for k = 4, 16, 64, 256 on the zoo.

Run from the repository root: `python benchmarks/bench_cluster.py [--quick] [--models digits,glyphs_vgg,ocr_cls,ocr_rec]
[--ks 4,16,64,256] [--rec-lines 60] [--json out.json]`.
File ratio: bytes of the saved .onnx (not zipped) over the float file. Session start: median of 5 fresh ONNX
Runtime sessions from the file bytes (where the decoders are constant-folded), float and clustered taken in
turns; latency: interleaved medians (float / clustered, so 1.00 = no cost per inference), batch 1 on the trained
models, one eval batch on the others.

What the quality columns mean:
- digits (360 labelled test images) and glyphs_vgg (VGG-style CNN trained on rendered 32x32 glyphs, 2,000 test
  images in held-out fonts): top-1 accuracy against the labels, float → clustered, and the drop in points;
- ocr_cls (PP-OCR direction classifier): accuracy on all 600 rendered evaluation lines;
- ocr_rec (PP-OCRv4 recogniser; slow, only with `--models ...,ocr_rec`): char_accuracy on `--rec-lines` lines;
- resnet18, mobilenetv2, encoder: random weights, so their quality cell reads "random weights: drift only, not
  accuracy"; they are there for file size, session start and latency.
Every row also gives the drift against float on 16 eval samples: top-1 agreement, the minimum output cosine and
the relative L2 error. The k-means table (with resnet18) times the numpy solver against scikit-learn on ResNet-18's
largest weight. `--quick`: digits only, fewer repeats, no extra specs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_prune import interleaved_latency
from bench_trained import METRIC, REC_LINES, evaluation, input_key, latency_feed, quality_cells, quality_note, score, \
    trained_quality, zoo_entry

import effc
from effc.calib import CalibrationData
from effc.ir import load_model
from effc.onnx_runtime import compare_outputs, ort_session
from effc.passes.cluster.kmeans import kmeans_1d
from effc.passes.prune.sensitivity import relative_drift

MODELS = ("digits", "glyphs_vgg", "ocr_cls", "resnet18", "mobilenetv2", "encoder")  # ocr_rec: name it in --models
KS = (4, 16, 64, 256)
EXTRA = [("resnet18", "prune(ratio=0.5),cluster(k=16)"), ("resnet18", "cluster(k=16,scope=channel)"),
         ("resnet18", "cluster(k=16),int8"), ("mobilenetv2", "prune(ratio=0.5),cluster(k=16)"),
         ("glyphs_vgg", "prune(ratio=0.3),cluster(k=16)"), ("glyphs_vgg", "cluster(k=16),int8"),
         ("ocr_cls", "cluster(k=16),int8"), ("ocr_rec", "cluster(k=16),int8")]
DIGITS_MIN_SIZE = 64  # digits' layers are tiny: the default min_size=1024 would leave most of them float


def file_bytes(model) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        return model.save(Path(tmp) / "m.onnx").stat().st_size


def session_start_ms(payloads: list[bytes], repeats: int = 5) -> list[float]:
    times = [[] for _ in payloads]
    for _ in range(repeats):
        for i, payload in enumerate(payloads):
            start = time.perf_counter()
            ort_session(payload)
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) * 1e3 for t in times]


def run_case(name: str, spec: str, repeats: int, rec_lines: int = REC_LINES) -> dict:
    zoo = zoo_entry(name)
    base = load_model(zoo.onnx_path)
    ctx = effc.Context(calibration=CalibrationData.load(zoo.calib_path))
    start = time.perf_counter()
    out = effc.optimize(load_model(zoo.onnx_path), spec, ctx).model
    seconds = time.perf_counter() - start
    data = evaluation(name, rec_lines if name == "ocr_rec" else None) if name in METRIC else None
    samples = CalibrationData({input_key(name): data[input_key(name)]}) if data is not None else \
        CalibrationData.load(zoo.eval_path)
    feeds = list(samples.batches(base.input_specs(), limit=16))
    sessions = (ort_session(base), ort_session(out))
    reference, candidate = ([s.run(None, f) for f in feeds] for s in sessions)
    drift = compare_outputs([{"y": r[0]} for r in reference], [{"y": c[0]} for c in candidate])
    base_start, out_start = session_start_ms([base.to_proto().SerializeToString(), out.to_proto().SerializeToString()])
    base_ms, out_ms = interleaved_latency(list(sessions), feeds[0] if data is None else latency_feed(name, data), repeats)
    row = {"model": name, "spec": spec, "seconds": round(seconds, 1), "file_ratio": file_bytes(out) / file_bytes(base),
           "file_mb": file_bytes(out) / 1e6, "top1": drift.top1_agreement, "cosine": drift.cosine,
           "rel_l2": relative_drift(reference, candidate), "start_ms": (base_start, out_start),
           "latency_ratio": base_ms / out_ms, "note": quality_note(name, data)}
    if data is not None:
        row.update(trained_quality(name, out, data, score(name, base, data)))
    return row


def kmeans_timing(k: int) -> dict:
    model = load_model(zoo_entry("resnet18").onnx_path)
    weight = max((c.values for c in model.constants()), key=lambda v: v.size)
    row = {"values": int(weight.size), "k": k}
    for solver in ("numpy", "sklearn"):
        start = time.perf_counter()
        codebook, indices = kmeans_1d(weight, k, solver=solver)
        row[f"{solver}_s"] = time.perf_counter() - start
        row[f"{solver}_mse"] = float(np.mean((weight - codebook[indices]) ** 2))
    return row


def table(rows: list[dict]) -> str:
    lines = ["| model | spec | file (ratio, MB) | quality metric | float → clustered | drop (points) | drift vs float | "
             "ORT session start ms (float → clustered) | latency float/clustered | pass time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        drift = (f"top-1 {r['top1']:.3f}, " if r["top1"] is not None else "") + f"cos {r['cosine']:.4f}, rel L2 {r['rel_l2']:.3f}"
        lines.append(f"| {r['model']} | `{r['spec']}` | {r['file_ratio']:.3f} ({r['file_mb']:.2f}) | {quality_cells(r)} | "
                     f"{drift} | {r['start_ms'][0]:.0f} → {r['start_ms'][1]:.0f} | {r['latency_ratio']:.2f} | {r['seconds']}s |")
    return "\n".join(lines)


def kmeans_table(rows: list[dict]) -> str:
    lines = ["| weight values | k | numpy s | sklearn s | numpy MSE | sklearn MSE |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['values']} | {r['k']} | {r['numpy_s']:.3f} | {r['sklearn_s']:.3f} | {r['numpy_mse']:.3e} | {r['sklearn_mse']:.3e} |"
              for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits only (unless --models), fewer repeats, no extra specs")
    parser.add_argument("--models", help=f"comma-separated zoo models (default: {','.join(MODELS)}; ocr_rec only when named)")
    parser.add_argument("--ks", default=",".join(map(str, KS)), help="cluster sizes")
    parser.add_argument("--rec-lines", type=int, default=REC_LINES, help="evaluation lines for ocr_rec")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    models = args.models.split(",") if args.models else ("digits",) if args.quick else MODELS
    ks = [int(k) for k in args.ks.split(",")]
    cases = [(m, f"cluster(k={k}" + (f",min_size={DIGITS_MIN_SIZE})" if m == "digits" else ")")) for m in models for k in ks]
    cases += [] if args.quick else [c for c in EXTRA if c[0] in models]
    rows = []
    for name, spec in cases:
        rows.append(run_case(name, spec, 10 if args.quick else args.repeats, args.rec_lines))
        print(f"{name} {spec}: file {rows[-1]['file_ratio']:.3f}", file=sys.stderr, flush=True)
    print("Quality columns:")
    print("\n".join(dict.fromkeys(r["note"] for r in rows)))
    print()
    print(table(rows))
    timing = [] if args.quick or "resnet18" not in models else [kmeans_timing(k) for k in (16, 256)]
    if timing:
        print()
        print(kmeans_table(timing))
    if args.json:
        args.json.write_text(json.dumps({"cases": rows, "kmeans": timing}, indent=1))


if __name__ == "__main__":
    main()
