"""`effc profile`: end-to-end latency, per-kernel times mapped back to ONNX nodes (kernel_map.py), memory, and ONNX
Runtime beside it."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from effc.errors import EffcError
from effc.onnx_runtime import Latency
from effc.profile.kernel_map import KernelRow, is_builtin, kernel_rows


@dataclass
class ProfileInputs:
    """What a profile fed the artifact (and ORT beside it)."""

    source: str  # "file" (--inputs), "calibration" (the data the artifact was calibrated on) or "random"
    path: str | None = None  # the file; for random inputs, the calibration data the artifact recorded but is gone
    calibrated: bool = False  # a pass of the pipeline calibrated its ranges on data (int8): random inputs mislead

    def describe(self) -> str:
        if self.source == "file":
            return f"{self.path} (first sample)"
        if self.source == "calibration":
            return f"{self.path} (calibration data, first sample)"
        if not self.calibrated:
            return "random inputs"
        gone = f" ({self.path} is gone)" if self.path else ""
        return f"random inputs, not the data its int8 pass was calibrated on{gone}: give --inputs DATA.npz"


@dataclass
class Profile:
    artifact: str
    target: str
    where: str
    emulated: bool
    latency: Latency
    kernels: list[KernelRow]
    kernel_total_ms: float | None  # median per instrumented run, all kernels together
    builtin_ms: float | None
    instrumented: Latency | None  # end-to-end time of the instrumented runs the kernel times come from
    kernel_coverage: float | None  # median over instrumented runs of (kernel + builtin time) / that run's time
    weight_bytes: int | None
    peak_activation_bytes: int | None
    inputs: ProfileInputs = field(default_factory=lambda: ProfileInputs("random"))
    ort_latency: Latency | None = None
    ort_max_abs_diff: float | None = None
    ort_provider: str | None = None  # CUDAExecutionProvider beside a CUDA artifact where ORT has it, else the CPU one
    instructions_per_call: int | None = None  # emulated runners that count them (qemu-aarch64): median of 3 calls

    def to_json(self) -> dict:
        data = asdict(self)
        data["latency"] = self.latency.to_json()
        data["ort_latency"] = self.ort_latency.to_json() if self.ort_latency else None
        data["instrumented"] = self.instrumented.to_json() if self.instrumented else None
        return data


def profile_inputs(meta: dict, inputs: str | Path | None = None, *, seed: int = 0) -> tuple[dict[str, np.ndarray], ProfileInputs]:
    """The feeds to profile an artifact (its effc.json `meta`) on: the first batch of `inputs` (.npz keyed by input
    name, or a folder of .npy), else of the calibration data it was built with while that is still there, else random
    inputs of its shapes. EffcError for `inputs` that do not exist or do not fit the artifact's inputs."""
    from effc.calib import CalibrationData
    from effc.ir import TensorSpec
    from effc.onnx_runtime import random_inputs

    specs = [TensorSpec(s["name"], tuple(s["shape"]), np.dtype(s["dtype"])) for s in meta["inputs"]]
    recorded = (meta.get("calibration") or {}).get("path")
    calibrated = bool(recorded) or _calibrates(meta.get("pipeline"))
    if inputs is not None or (recorded and Path(recorded).exists()):
        source, path = ("file", str(inputs)) if inputs is not None else ("calibration", _shown(recorded))
        feeds = next(CalibrationData.load(inputs if inputs is not None else recorded).batches(specs), None)
        if feeds is None:
            raise EffcError(f"{path}: no samples")
        return feeds, ProfileInputs(source, path, calibrated)
    return random_inputs(specs, seed=seed), ProfileInputs("random", _shown(recorded) if recorded else None, calibrated)


def _shown(path: str) -> str:
    """`path` relative to the working directory when it lies below it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def _calibrates(pipeline: str | None) -> bool:
    """Whether a pass of `pipeline` (a spec) calibrates on data (int8); artifacts built before effc.json recorded
    the calibration path say only this."""
    from effc.pipeline import Pipeline

    try:
        return any("calibration" in p.requires for p in Pipeline.parse(pipeline).passes()) if pipeline else False
    except EffcError:  # a plugin pass not installed here: nothing known
        return False


def _ort_provider(meta: dict) -> str:
    """The ONNX Runtime execution provider that runs where the artifact does: CUDA's for a CUDA artifact when this
    ONNX Runtime has it (the onnxruntime-gpu wheel), else the CPU's."""
    import onnxruntime as ort

    if meta["target"].get("device") == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return "CUDAExecutionProvider"
    return "CPUExecutionProvider"


def profile_artifact(path: str | Path, *, repeat: int = 20, warmup: int = 3, rpc: str | None = None,
                     compare_ort: str | None = None, inputs: str | Path | None = None, seed: int = 0) -> Profile:
    """Profile an artifact on the first sample of `inputs`, of its calibration data or random inputs (see
    `profile_inputs`); `compare_ort` (an ONNX path) is timed on ORT beside it and compared on the same inputs."""
    from effc.artifact import load_artifact
    from effc.onnx_runtime import measure_latency, ort_session, run_session

    artifact = load_artifact(path, rpc=rpc)
    meta = artifact.meta
    feeds, fed = profile_inputs(meta, inputs, seed=seed)
    timings = artifact.runner.profile(artifact.ordered_inputs(feeds), repeat=repeat, warmup=warmup, kernels=True)
    latency = Latency.of(timings.latency_s)
    rows, kernel_ms, builtin_ms = [], None, None
    instrumented = Latency.of(timings.instrumented_s) if timings.instrumented_s else None
    coverage = None
    if timings.kernels_s:
        rows = kernel_rows(timings.kernels_s, timings.sequence, meta.get("onnx_nodes") or [], latency.median_ms)
        arithmetic = meta.get("kernel_arithmetic") or {}
        for row in rows:
            row.arithmetic = arithmetic.get(row.name)
        kernel_ms = sum(r.median_ms for r in rows)
        builtin_ms = sum(statistics.median(v) * 1e3 for k, v in timings.kernels_s.items() if is_builtin(k))
        if timings.instrumented_s:
            per_run = [sum(v[i] for v in timings.kernels_s.values()) / run
                       for i, run in enumerate(timings.instrumented_s) if run > 0]
            coverage = statistics.median(per_run) if per_run else None
    profile = Profile(str(path), meta["target"]["name"], artifact.runner.where, artifact.runner.emulated, latency, rows,
                      kernel_ms, builtin_ms, instrumented, coverage, meta.get("weight_bytes"),
                      meta.get("peak_activation_bytes"), fed)
    counter = getattr(artifact.runner, "instructions_per_run", None)
    if counter is not None:
        profile.instructions_per_call = int(statistics.median(counter(artifact.ordered_inputs(feeds), runs=3)))
    if compare_ort:
        profile.ort_provider = _ort_provider(meta)
        session = ort_session(str(compare_ort), provider=profile.ort_provider)
        profile.ort_latency = measure_latency(session, feeds, repeat=repeat, warmup=warmup)
        reference = run_session(session, feeds)
        diffs = [float(np.max(np.abs(reference[name].astype(np.float64) - out.astype(np.float64))))
                 for name, out in zip(artifact.output_names, timings.outputs) if name in reference and out.size]
        profile.ort_max_abs_diff = max(diffs) if diffs else None
    return profile
