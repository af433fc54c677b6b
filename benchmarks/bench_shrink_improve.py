"""The survey's "Shrink and improve" experiment on the glyph classifier (effc/zoo/vgg.py), beside effc's frontier
without retraining.

Run from the repository root: `python benchmarks/bench_shrink_improve.py [--widths 0.25,0.5,1.0,1.4]
[--epochs N] [--distill-all] [--plot PATH]`. Training-based frontier: the VGG-style CNN at each width, trained
plain or with augmentation, and (widths below the teacher's) distilled from the width-1.0 augmented model, each
in float and after effc `int8`. effc's frontier: prune / cluster / int8 and their combinations applied to the
width-1.0 model, no retraining.
Columns: accuracy on the 2,000 held-out-font test images, its change against width-1.0 float (points), .onnx
size and the ratio of width-1.0 float's size to it, MACs of one image, and ONNX Runtime CPU latency at batch 1
(2 threads, interleaved medians) as a ratio to width-1.0 float. Trained variants are cached next to the zoo
model (`<cache>/glyphs/<version>/frontier/`, or `frontier-e<N>/` for another epoch count); the first run trains
them (tens of minutes on 2 cores). With `--epochs` other than the zoo's, width-1.0 plain is trained too, with
the same recipe, and effc's rows start from it rather than from the zoo model.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_prune import interleaved_latency

import effc
from effc.calib import CalibrationData
from effc.ir import load_model
from effc.ir.metrics import model_stats
from effc.onnx_runtime import ort_session
from effc.zoo import vgg

INT8 = "int8"
EFFC_SPECS = ("prune(ratio=0.3)", "prune(ratio=0.5)", "cluster(k=16)", "int8", "prune(ratio=0.3),int8",
              "prune(ratio=0.5),int8", "cluster(k=16),int8", "prune(ratio=0.3),cluster(k=16),int8")
TEACHER = (1.0, True)  # (width, augmentation) of the distillation teacher
ZOO_EPOCHS = vgg.TrainingRecipe().epochs  # what the zoo model trained


def variant_label(width: float, augment: bool, distill: bool) -> str:
    return f"w{width}" + ("+aug" if augment else "") + ("+kd" if distill else "")


def variants(widths: tuple[float, ...], distill_all: bool) -> list[tuple[float, bool, bool]]:
    """The teacher first (the others distil from it), then every width plain and augmented, then distilled ones
    (augmented only unless distill_all); width 1.0 is always there, as the reference."""
    widths = tuple(sorted({*widths, 1.0}))
    grid = [(TEACHER[0], TEACHER[1], False)]
    grid += [(w, a, False) for w in widths for a in (False, True) if (w, a) != TEACHER]
    grid += [(w, a, True) for w in widths if w < TEACHER[0] for a in ((False, True) if distill_all else (True,))]
    return grid


def trained_variant(width: float, augment: bool, distill: bool, folder: Path, data, teacher,
                    epochs: int) -> tuple[Path, float]:
    """The variant's ONNX file (trained and cached on first use) and its training seconds (0 if cached)."""
    path = folder / f"{variant_label(width, augment, distill)}.onnx"
    if width == 1.0 and not augment and not distill and epochs == ZOO_EPOCHS:
        return vgg.get().onnx_path, 0.0
    if path.exists():
        return path, 0.0
    start = time.perf_counter()
    recipe = vgg.TrainingRecipe(width=width, augment=augment, teacher=teacher() if distill else None, epochs=epochs)
    vgg.export(vgg.train(*data, recipe), path)
    return path, time.perf_counter() - start


def accuracy(path: Path, test: dict) -> float:
    logits = ort_session(load_model(path)).run(None, {vgg.INPUT_NAME: test[vgg.INPUT_NAME]})[0]
    return float(np.mean(logits.argmax(1) == test["labels"]))


def run(widths: tuple[float, ...], distill_all: bool, folder: Path, tmp: Path, epochs: int) -> list[dict]:
    zoo_model = vgg.get()
    with np.load(zoo_model.eval_path) as npz:
        test = {k: npz[k] for k in npz.files}
    calibration = CalibrationData.load(zoo_model.calib_path)
    data = vgg.training_set()
    folder.mkdir(parents=True, exist_ok=True)
    teacher_weights = folder / f"{variant_label(*TEACHER, False)}.pt"

    def teacher():
        import torch

        model = vgg.vgg(TEACHER[0])
        model.load_state_dict(torch.load(teacher_weights, weights_only=True))
        return model.eval()

    rows = []
    for width, augment, distill in variants(widths, distill_all):
        label = variant_label(width, augment, distill)
        if (width, augment) == TEACHER and not distill and not teacher_weights.exists():
            import torch

            start = time.perf_counter()
            model = vgg.train(*data, vgg.TrainingRecipe(width=width, augment=augment, epochs=epochs))
            torch.save(model.state_dict(), teacher_weights)
            vgg.export(model, folder / f"{label}.onnx")
            path, seconds = folder / f"{label}.onnx", time.perf_counter() - start
        else:
            path, seconds = trained_variant(width, augment, distill, folder, data, teacher, epochs)
        print(f"  trained {label} in {seconds:.0f} s", file=sys.stderr, flush=True)
        macs = vgg.macs(width)
        rows.append({"frontier": "training", "method": label, "path": path, "macs": macs, "train_s": seconds})
        quantized = effc.optimize(load_model(path), INT8, effc.Context(calibration=calibration)).model
        rows.append({"frontier": "training", "method": f"{label} + {INT8}", "macs": macs,
                     "path": quantized.save(tmp / f"{label}.int8.onnx")})
    start_model = next(r["path"] for r in rows if r["method"] == "w1.0")
    for i, spec in enumerate(EFFC_SPECS):
        start = time.perf_counter()
        out = effc.optimize(load_model(start_model), spec, effc.Context(calibration=calibration)).model
        rows.append({"frontier": "effc, no retraining", "method": f"w1.0 + {spec}", "macs": model_stats(out).macs,
                     "path": out.save(tmp / f"effc.{i}.onnx"), "pass_s": time.perf_counter() - start})
    base = next(r for r in rows if r["method"] == "w1.0")
    for row in rows:
        row["accuracy"] = accuracy(row["path"], test)
        row["bytes"] = row["path"].stat().st_size
    latencies = interleaved_latency([ort_session(load_model(r["path"])) for r in rows],
                                    {vgg.INPUT_NAME: test[vgg.INPUT_NAME][:1]}, repeats=30)
    base_ms = latencies[rows.index(base)]
    for row, ms in zip(rows, latencies):
        row.update(ms=ms, latency_ratio=ms / base_ms, drop=100 * (row["accuracy"] - base["accuracy"]),
                   smaller=base["bytes"] / row["bytes"], macs_ratio=row["macs"] / base["macs"])
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| frontier | model | accuracy | vs w1.0 float (points) | file | smaller | MACs | latency vs w1.0 float |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['frontier']} | {r['method']} | {100 * r['accuracy']:.2f}% | {r['drop']:+.2f} | "
                     f"{r['bytes'] / 1e3:.0f} kB | {r['smaller']:.1f}x | {r['macs'] / 1e6:.2f} M | "
                     f"{r['latency_ratio']:.2f}x |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for frontier, marker in (("training", "o"), ("effc, no retraining", "s")):
        chosen = [r for r in rows if r["frontier"] == frontier]
        axis.scatter([r["bytes"] / 1e3 for r in chosen], [100 * r["accuracy"] for r in chosen], marker=marker,
                     label=frontier)
        for r in chosen:
            axis.annotate(r["method"].replace("w1.0 + ", ""), (r["bytes"] / 1e3, 100 * r["accuracy"]), fontsize=6)
    axis.set_xscale("log")
    axis.set_xlabel("ONNX file size (kB, log)")
    axis.set_ylabel("test accuracy, held-out fonts (%)")
    axis.set_title("glyph VGG: shrink-and-improve vs effc without retraining")
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="0.25,0.5,1.0", help=f"widths to train, of {vgg.WIDTHS}")
    parser.add_argument("--epochs", type=int, default=ZOO_EPOCHS,
                        help="training epochs of every variant (default: the zoo model's)")
    parser.add_argument("--distill-all", action="store_true", help="also distil the plain (unaugmented) widths")
    parser.add_argument("--plot", type=Path, default=Path("benchmarks/figures/shrink_improve.png"))
    parser.add_argument("--json", type=Path, help="write the rows as JSON too")
    args = parser.parse_args()
    print(f"# bench_shrink_improve {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, "
          f"{platform.processor() or platform.machine()}, Python {sys.version.split()[0]}", flush=True)
    folder = vgg.get().onnx_path.parent / ("frontier" if args.epochs == ZOO_EPOCHS else f"frontier-e{args.epochs}")
    with tempfile.TemporaryDirectory() as tmp:
        widths = tuple(float(w) for w in args.widths.split(","))
        rows = run(widths, args.distill_all, folder, Path(tmp), args.epochs)
        print(table(rows), flush=True)
        if args.plot:
            plot(rows, args.plot)
        if args.json:
            args.json.write_text(json.dumps([{k: (str(v) if isinstance(v, Path) else v) for k, v in r.items()}
                                             for r in rows], indent=1))


if __name__ == "__main__":
    main()
