"""Compression on trained models with real evaluation data: the PP-OCRv4 recogniser, direction classifier and
detector (rapidocr_onnxruntime wheel, rendered text in held-out fonts), the glyph classifier (glyphs_vgg: the VGG-style
CNN trained here on rendered 32x32 glyphs, tested on held-out fonts) and digits.

Run from the repository root: `python benchmarks/bench_trained.py [--models ocr_rec,digits] [--lines N]`.
For each effc pipeline and for ONNX Runtime's quantize_static (per-channel QDQ, u8 activations / s8 weights, each
calibrator): the model's own quality metric and its drop against float (points), the .onnx file size, and the
latency on ONNX Runtime's CPU provider (2 threads, interleaved medians, ratio to float: < 1 is faster).
Calibration is the model's calibration split (other fonts for OCR).
bench_int8, bench_prune and bench_cluster import zoo_entry, evaluation, score, latency_feed and the quality_*
helpers from here for their trained-model quality columns.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import effc
from effc.calib import CalibrationData
from effc.errors import EffcError
from effc.ir import Model, load_model
from effc.onnx_runtime import ort_session
from effc.zoo import get, ocr, vgg

MODELS = ("ocr_rec", "ocr_cls", "ocr_det", "glyphs_vgg", "digits")
LABELLED = ("digits", "glyphs_vgg")  # scored by top-1 accuracy against `labels`
SPECS = ("int8", "int8(rounding=nearest)", "int8(calibrator=entropy)", "prune(ratio=0.3)", "prune(ratio=0.5)",
         "prune(ratio=0.3,scope=uniform)", "cluster(k=16)", "cluster(k=16,assign=nearest)", "cluster(k=16),int8",
         "prune(ratio=0.3),cluster(k=16),int8")
ORT_METHODS = ("MinMax", "Percentile", "Entropy")
METRIC = {"ocr_rec": "char_accuracy", "ocr_cls": "accuracy", "ocr_det": "recall", "digits": "accuracy",
          "glyphs_vgg": "accuracy"}
# bench_int8, bench_prune and bench_cluster score these by METRIC; their other models (resnet18, mobilenetv2,
# encoder) have random weights, so agreement with float is all their rows can say
RANDOM_NOTE = "random weights: drift only, not accuracy"
REC_LINES = 60  # the recogniser's default evaluation lines in those benchmarks (the slow one); ocr_cls: all 600


def zoo_entry(name: str):
    if name == vgg.NAME:
        return vgg.get()
    return ocr.get(name) if name in ocr.OCR_NAMES else get(name)


def evaluation(name: str, lines: int | None) -> dict:
    """The evaluation split's arrays; the recogniser and classifier cut to `lines` (None: all)."""
    entry = zoo_entry(name)
    data = dict(np.load(entry.eval_path))
    if name in ("ocr_rec", "ocr_cls"):
        data = {k: v[:lines] for k, v in data.items()}
    return data


def score(name: str, model, data: dict) -> float:
    """`name`'s METRIC on `data`; `model`: an .onnx path, ModelProto, bytes or effc Model."""
    session = ort_session(model if isinstance(model, Model) else load_model(model))
    input_name = session.get_inputs()[0].name
    if name in LABELLED:
        logits = session.run(None, {input_name: data["input"]})[0]
        return float(np.mean(logits.argmax(1) == data["labels"]))
    scores = ocr.evaluate(name, lambda x: session.run(None, {input_name: x})[0], data)
    return scores[METRIC[name]]


def input_key(name: str) -> str:
    return "input" if name in LABELLED else ocr.INPUT_NAME


def latency_feed(name: str, data: dict) -> dict:
    key = input_key(name)
    return {key: np.ascontiguousarray(data[key][:1])}


def trained_quality(name: str, model, data: dict, float_score: float) -> dict:
    """The row fields of a trained model's quality: metric, float and candidate score, drop in points (+ = worse)."""
    value = score(name, model, data)
    return {"metric": METRIC[name], "float_score": float_score, "score": value, "drop": 100 * (float_score - value)}


def quality_cells(row: dict) -> str:
    """Three table cells: metric, float → candidate, drop in points; the random-weight note for untrained models."""
    if "metric" not in row:
        return f"{RANDOM_NOTE} | - | -"
    return (f"{row['metric']} | {100 * row['float_score']:.1f}% → {100 * row['score']:.1f}% | "
            f"{row['drop']:+.1f}")


def quality_note(name: str, data: dict | None = None) -> str:
    """What `name`'s quality cells mean (the benchmarks print one line per model above their tables)."""
    if name not in METRIC:
        return f"- {name}: {RANDOM_NOTE} (its rows are for latency and size)"
    return f"- {name}: {METRIC[name]} on {len(data[input_key(name)])} held-out samples, drop = float - candidate"


def run_model(name: str, lines: int | None, folder: Path) -> list[dict]:
    from bench_int8 import ort_quantize  # imported here: bench_int8 imports this module
    from bench_prune import interleaved_latency

    entry = zoo_entry(name)
    data = evaluation(name, lines)
    float_score = score(name, entry.onnx_path, data)
    calibration = CalibrationData.load(entry.calib_path)
    rows = [{"model": name, "method": "float", "score": float_score, "bytes": entry.onnx_path.stat().st_size,
             "path": entry.onnx_path, "seconds": 0.0}]
    for i, spec in enumerate(SPECS):
        start = time.perf_counter()
        try:
            out = effc.optimize(load_model(entry.onnx_path), spec, effc.Context(calibration=calibration)).model
            path = out.save(folder / f"{name}.{i}.onnx")
        except EffcError as exc:  # a refusal is a result too
            rows.append({"model": name, "method": f"effc {spec}", "error": str(exc).splitlines()[0][:60]})
            continue
        rows.append({"model": name, "method": f"effc {spec}", "score": score(name, path, data),
                     "bytes": path.stat().st_size, "path": path, "seconds": time.perf_counter() - start})
    specs = load_model(entry.onnx_path).input_specs()
    for method in ORT_METHODS:
        start = time.perf_counter()
        try:
            path = ort_quantize(entry.onnx_path, calibration, specs, folder / f"{name}.ort.{method}.onnx", best=True,
                                method=method)
        except Exception as exc:  # noqa: BLE001 - ORT's quantizer raises anything on models it cannot handle
            rows.append({"model": name, "method": f"ORT quantize_static {method}", "error": str(exc).splitlines()[0][:60]})
            continue
        rows.append({"model": name, "method": f"ORT quantize_static {method}", "score": score(name, path, data),
                     "bytes": path.stat().st_size, "path": path, "seconds": time.perf_counter() - start})
    timed = [r for r in rows if "path" in r]
    sessions = [ort_session(load_model(r["path"])) for r in timed]
    latencies = interleaved_latency(sessions, latency_feed(name, data), repeats=10)
    for row, ms in zip(timed, latencies):
        row["ms"] = ms
        row["ratio"] = ms / latencies[0]
    for row in rows:
        if "score" in row:
            row["drop"] = 100 * (float_score - row["score"])
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | method | metric | score | drop (points) | file | ORT ms (batch 1) | vs float | pass s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['method']} | | failed: {r['error']} | | | | | |")
            continue
        lines.append(f"| {r['model']} | {r['method']} | {METRIC[r['model']]} | {100 * r['score']:.1f}% | "
                     f"{r['drop']:+.1f} | {r['bytes'] / 1e6:.2f} MB | {r['ms']:.2f} | {r['ratio']:.2f}x | "
                     f"{r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--lines", type=int, default=None,
                        help="cut the recogniser's and classifier's evaluation to this many lines (default: all, 150 and 600)")
    args = parser.parse_args()
    print(f"# bench_trained {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
          f"{platform.processor() or platform.machine()}, Python {sys.version.split()[0]}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            print(table(run_model(name, args.lines, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
