"""effc int8 against onnxruntime.quantization.quantize_static, same calibration data: quality on the trained models,
latency on all.

For each model: float, effc `int8` (default options), effc with the other weight rounding (nearest or
gptq, whichever is not the default), effc with cross-layer equalization, effc with
accuracy_budget=0.05 (mixed precision), ORT quantize_static with its defaults (QDQ, int8/int8,
per-tensor, MinMax) and with its best settings (uint8 activations, int8 per-channel weights, the better of
MinMax and Percentile by the model's metric, or by agreement on the random-weight models). Reports the quality
metric, top-1 agreement with float, output SQNR, ONNX Runtime latency (median, float and candidates measured
interleaved in the same run), speed-up over float and file size relative to float.

What each model's quality column means:
- digits (trained, 360 labelled test images), glyphs_vgg (the VGG-style CNN trained on rendered 32x32 glyphs, 2,000
  test images in held-out fonts): top-1 accuracy against the labels;
- ocr_cls (PP-OCR direction classifier): accuracy on all 600 rendered evaluation lines;
- ocr_rec (PP-OCRv4 recogniser, the slow one: only when named): char_accuracy on `--rec-lines` lines (default 60);
- resnet18, mobilenetv2, encoder: random weights, so there is no accuracy; their rows say "random weights: drift
  only, not accuracy" and keep top-1 agreement and SQNR against float (drift) next to their latency, which is what
  they are there for.
For the trained models "drop" is float minus candidate in points (+ = worse than float); agreement and SQNR are
reported for every model. Latency is timed on one eval batch for the random-weight models and at batch 1 for the
trained ones.

The ImageNet-shaped models are evaluated on `--eval-samples` synthetic images (default 1024): the zoo's 32 eval
images extended by the same generator and seed (its first 32 are the zoo's own), the same samples for every
candidate. At MobileNetV2's ~50% agreement one estimate from n images has a standard error of 0.5 / sqrt(n):
0.088 at 32 and 0.044 at 128, more than the gaps between the candidates; 0.016 at 1024.

    python benchmarks/bench_int8.py [digits glyphs_vgg ocr_cls resnet18 mobilenetv2 encoder ocr_rec] [--repeat 30]
        [--rounds 3] [--eval-samples 1024] [--rec-lines 60]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from bench_trained import METRIC, REC_LINES, evaluation, input_key, latency_feed, quality_cells, \
    quality_note, score, trained_quality, zoo_entry

from effc import optimize
from effc.calib import CalibrationData
from effc.errors import EffcError
from effc.ir import load_model
from effc.onnx_runtime import measure_latency, ort_session, run_session
from effc.passes.int8.int8 import Int8
from effc.pipeline.context import Context
from effc.zoo.build import EVAL_SEED, IMAGE_SAMPLES
from effc.zoo.data import synthetic_images

IMAGE_MODELS = ("resnet18", "mobilenetv2")
MODELS = ("digits", "glyphs_vgg", "ocr_cls", "resnet18", "mobilenetv2", "encoder")  # ocr_rec: name it


def ort_quantize(float_path: Path, calibration: CalibrationData, specs, out: Path, *, best: bool, method: str = "MinMax") -> Path:
    from onnxruntime import quantization as q

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self.feeds = iter(calibration.batches(specs, batch_size=1))  # ORT histograms need equal batch sizes

        def get_next(self):
            return next(self.feeds, None)

    kwargs = dict(quant_format=q.QuantFormat.QDQ, calibrate_method=getattr(q.CalibrationMethod, method))
    if best:
        kwargs.update(activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8, per_channel=True)
    q.quantize_static(str(float_path), str(out), Reader(), **kwargs)
    return out


def outputs(model, feeds):
    session = ort_session(model)
    return [run_session(session, f) for f in feeds]


def quality(reference: list[dict], candidate: list[dict]) -> dict:
    """Drift against float: top-1 agreement (argmax of the last axis) and output SQNR."""
    signal = noise = 0.0
    agree = total = 0
    for ref, cand in zip(reference, candidate):
        r, c = next(iter(ref.values())).astype(np.float64), next(iter(cand.values())).astype(np.float64)
        signal += float(np.sum(r * r))
        noise += float(np.sum((r - c) ** 2))
        agree += int(np.sum(np.argmax(r, -1) == np.argmax(c, -1)))
        total += int(np.prod(r.shape[:-1]))
    return {"agreement": agree / total, "sqnr_db": 10 * np.log10(signal / noise) if noise else float("inf")}


def bench(name: str, repeat: int, rounds: int, folder: Path, eval_samples: int = IMAGE_SAMPLES,
          rec_lines: int = REC_LINES) -> list[dict]:
    z = zoo_entry(name)
    float_model = load_model(z.onnx_path)
    specs = float_model.input_specs()
    calibration = CalibrationData.load(z.calib_path)
    data = None
    if name in METRIC:  # trained: scored by its own metric on its evaluation split
        data = evaluation(name, rec_lines if name == "ocr_rec" else None)
        eval_set = CalibrationData({input_key(name): data[input_key(name)]})
    else:
        eval_set = CalibrationData.load(z.eval_path)
        if name in IMAGE_MODELS and eval_samples > IMAGE_SAMPLES:  # the zoo's eval images, extended by their generator
            eval_set = CalibrationData({"input": synthetic_images(eval_samples, EVAL_SEED)})
    eval_feeds = list(eval_set.batches(specs))
    reference = outputs(float_model, eval_feeds)
    float_score = score(name, z.onnx_path, data) if data is not None else None

    def judge(model) -> dict:
        drift = quality(reference, outputs(model, eval_feeds))
        return drift if data is None else {**drift, **trained_quality(name, model, data, float_score)}

    candidates: dict[str, object] = {}
    start = time.perf_counter()
    ctx = Context(calibration=calibration)
    candidates["effc int8"] = optimize(load_model(z.onnx_path), "int8", ctx).model
    effc_seconds = time.perf_counter() - start
    kernels = ctx.reports["int8"]["kernels"]
    other = "nearest" if Int8.Options().rounding == "gptq" else "gptq"
    start = time.perf_counter()
    candidates[f"effc int8(rounding={other})"] = optimize(load_model(z.onnx_path), f"int8(rounding={other})", Context(calibration=calibration)).model
    other_seconds = time.perf_counter() - start
    candidates["effc int8(equalize=true)"] = optimize(load_model(z.onnx_path), "int8(equalize=true)", Context(calibration=calibration)).model
    budget_ctx = Context(calibration=calibration)
    candidates["effc int8(accuracy_budget=0.05)"] = optimize(load_model(z.onnx_path), "int8(accuracy_budget=0.05)", budget_ctx).model
    kept = budget_ctx.reports["int8"]["kept_float"]

    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = folder / f"{name}_pre.onnx"
    quant_pre_process(str(z.onnx_path), str(prepared), skip_symbolic_shape=True)

    def ort_loadable(out: Path, **options) -> tuple[onnx.ModelProto, str]:
        """quantize_static from the pre-processed model, or from the float file where ORT cannot load that result
        (on ocr_cls the pre-processing's Conv+Add fusion leaves an int32 bias DequantizeLinear ORT rejects)."""
        proto = onnx.load(ort_quantize(prepared, calibration, specs, out, **options))
        try:
            ort_session(proto)
            return proto, ""
        except EffcError:
            return onnx.load(ort_quantize(z.onnx_path, calibration, specs, out, **options)), ", no pre-process"

    proto, how = ort_loadable(folder / f"{name}_ort_default.onnx", best=False)
    candidates[f"ORT default{how}"] = proto
    best = None
    for method in ("MinMax", "Percentile"):
        proto, how = ort_loadable(folder / f"{name}_ort_{method}.onnx", best=True, method=method)
        judged = judge(proto)
        key = judged.get("score", judged["agreement"]), judged["sqnr_db"]
        if best is None or key > best[0]:
            best = (key, proto, method + how, judged)
    candidates[f"ORT best (u8s8 per-channel {best[2]})"] = best[1]

    float_bytes = float_model.serialized_size()
    rows = [{"model": name, "variant": "float", **judge(float_model), "bytes": float_bytes}]
    for variant, model in candidates.items():
        size = model.serialized_size() if hasattr(model, "serialized_size") else model.ByteSize()
        judged = best[3] if model is best[1] else judge(model)
        rows.append({"model": name, "variant": variant, **judged, "bytes": size})
    # latency: one feed, sessions measured in turn, several rounds, median of the per-round medians
    feed = eval_feeds[0] if data is None else latency_feed(name, data)
    sessions = [ort_session(float_model)] + [ort_session(m) for m in candidates.values()]
    per_round = [[measure_latency(s, feed, repeat=repeat).median_ms for s in sessions] for _ in range(rounds)]
    medians = np.median(np.array(per_round), axis=0)
    for row, ms in zip(rows, medians):
        row["latency_ms"] = float(ms)
        row["speedup"] = float(medians[0] / ms)
        row["size_ratio"] = row["bytes"] / float_bytes
    rows[1]["calibrate_s"] = effc_seconds
    rows[1]["other_rounding"] = (other, other_seconds)
    rows[1]["integer_kernels"] = kernels["integer"]
    rows[1]["float_ops_left"] = kernels["float"]
    rows[1]["kept_with_budget"] = len(kept)
    rows[0]["note"] = quality_note(name, data)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| model | variant | quality metric | float → candidate | drop (points) | top-1 agreement | output SQNR dB | "
             "latency ms | speed-up vs float | size vs float |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sqnr = "inf" if not np.isfinite(r["sqnr_db"]) else f"{r['sqnr_db']:.1f}"
        lines.append(f"| {r['model']} | {r['variant']} | {quality_cells(r)} | {r['agreement']:.4f} | {sqnr} | {r['latency_ms']:.2f} | "
                     f"{r['speedup']:.2f}x | {r['size_ratio']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(MODELS), help=f"zoo models (default: {' '.join(MODELS)}; "
                        "ocr_rec only when named)")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--eval-samples", type=int, default=1024, help="eval images for resnet18 and mobilenetv2")
    parser.add_argument("--rec-lines", type=int, default=REC_LINES, help="evaluation lines for ocr_rec")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models:
            model_rows = bench(name, args.repeat, args.rounds, Path(folder), args.eval_samples, args.rec_lines)
            effc_row = model_rows[1]
            other, other_seconds = effc_row["other_rounding"]
            print(f"{name}: effc int8 calibrated in {effc_row['calibrate_s']:.1f} s (rounding={other}: {other_seconds:.1f} s); integer kernels {effc_row['integer_kernels']}; "
                  f"float compute left {effc_row['float_ops_left']}; accuracy_budget=0.05 kept {effc_row['kept_with_budget']} layers float",
                  flush=True)
            rows.extend(model_rows)
    print("Quality columns:")
    print("\n".join(r["note"] for r in rows if "note" in r))
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
