"""CUDA artifacts against ONNX Runtime's CUDA execution provider, on a machine with an NVIDIA GPU.

    python benchmarks/bench_cuda.py [--models resnet18,mobilenetv2,encoder] [--batches 1,8] [--precisions fp32,fp16]
                                    [--tune-trials 0] [--repeat 50] [--rounds 5] [--out DIR]

ORT's CUDA provider comes from the onnxruntime-gpu wheel, which provides the same `onnxruntime` module as the CPU
wheel: run this in a virtual environment that has onnxruntime-gpu instead (scripts/gpu_check.sh sets one up).
Prints a markdown table: effc's artifact and ORT CUDA (same precision: the fp16 model effc's fp16 pass writes) in
interleaved rounds, median milliseconds and their ratio, and the artifact's agreement with ORT. With
--tune-trials N each model is also tuned for N trials and compiled with the database.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime as ort

import effc
from effc.onnx_runtime import compare_outputs, random_inputs
from effc.zoo import get

INPUTS = {"resnet18": ("input", [3, 224, 224]), "mobilenetv2": ("input", [3, 224, 224]), "encoder": ("input_ids", [16])}


def cuda_session(model: effc.Model) -> ort.InferenceSession:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise SystemExit("this onnxruntime has no CUDAExecutionProvider: install onnxruntime-gpu in this environment")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.to_proto().SerializeToString(), options,
                                providers=["CUDAExecutionProvider", "CPUExecutionProvider"])


def timed(run, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,mobilenetv2,encoder")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--precisions", default="fp32,fp16")
    parser.add_argument("--tune-trials", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import tvm

    arch = "sm_" + str(tvm.cuda(0).compute_version).replace(".", "")
    out = Path(args.out or tempfile.mkdtemp(prefix="effc-bench-cuda-"))
    print(f"GPU {tvm.cuda(0).device_name} ({arch}); ORT {ort.__version__}")
    print("| model | batch | precision | tuned | effc ms | ORT CUDA ms | ratio | cosine vs ORT |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        input_name, sample_shape = INPUTS[name]
        for batch in map(int, args.batches.split(",")):
            shapes = {input_name: [batch, *sample_shape]}
            for precision in args.precisions.split(","):
                spec = "default" + (",fp16" if precision == "fp16" else "")
                reference = effc.optimize(effc.load_model(get(name).onnx_path, shapes), spec,
                                          effc.Context(target="cuda")).model
                session = cuda_session(reference)
                feeds = random_inputs(reference.input_specs(), seed=0)
                builds = [("no", None)]
                if args.tune_trials:
                    budget = effc.TuneBudget(trials=args.tune_trials, db=out / f"{name}.{batch}.{precision}.db")
                    report = effc.tune(get(name).onnx_path, "cuda", budget, pipeline=spec, input_shapes=shapes, cpu=arch)
                    builds.append((f"{report.trials} trials", report.db))
                for tuned, db in builds:
                    folder = out / f"{name}.b{batch}.{precision}.{'tuned' if db else 'untuned'}.effc"
                    artifact = effc.compile(get(name).onnx_path, "cuda", cpu=arch, pipeline=spec, input_shapes=shapes,
                                            out=folder, tuning_db=db)
                    names = [o.name for o in session.get_outputs()]
                    ours, theirs = [], []
                    for _ in range(args.rounds):
                        ours += timed(lambda: artifact(feeds), args.repeat)
                        theirs += timed(lambda: session.run(names, feeds), args.repeat)
                    drift = compare_outputs([dict(zip(names, session.run(names, feeds)))], [artifact(feeds)])
                    a, b = statistics.median(ours) * 1e3, statistics.median(theirs) * 1e3
                    print(f"| {name} | {batch} | {precision} | {tuned} | {a:.3f} | {b:.3f} | {a / b:.2f}x | "
                          f"{drift.cosine:.5f} |", flush=True)


if __name__ == "__main__":
    main()
