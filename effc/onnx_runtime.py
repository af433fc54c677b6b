"""ONNX Runtime as the reference executor: sessions, runs, latency, output drift."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping

import numpy as np
import onnx
import onnxruntime as ort

from effc.errors import EffcError
from effc.ir import Model, TensorSpec


def ort_session(model: Model | onnx.ModelProto | bytes | str, *, threads: int = 0, optimize: bool = True,
                provider: str = "CPUExecutionProvider") -> ort.InferenceSession:
    """An ONNX Runtime session (CPU unless `provider` names another, CPU still behind it); `threads=0` lets ORT
    choose."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if isinstance(model, Model):
        model = model.to_proto(portable=True)
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    try:
        return ort.InferenceSession(model, options, providers=list(dict.fromkeys([provider, "CPUExecutionProvider"])))
    except Exception as exc:  # ORT raises its own exception types for unsupported graphs
        raise EffcError(f"ONNX Runtime cannot load the model: {str(exc).splitlines()[0][:300]}") from None


def run_session(session: ort.InferenceSession, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds))))


def run_model(model: Model | onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return run_session(ort_session(model), feeds)


def uint8_activation_twin(model: Model) -> Model:
    """The int8 QDQ `model` with its int8 activations as uint8 (zero points + 128, weights untouched): the same
    numbers exactly. ONNX Runtime's x86 provider runs every quantized conv of the twin on its integer kernels,
    where for int8 activations it leaves some (depthwise ones) as float convs over dequantized values, which round
    differently: the twin is the integer reference for a signed (ARM) build."""
    import onnx_graphsurgeon as gs

    twin = model.copy()
    for node in twin.graph.nodes:
        if node.op not in ("QuantizeLinear", "DequantizeLinear") or len(node.inputs) < 3:
            continue
        if node.op == "DequantizeLinear" and isinstance(node.inputs[0], gs.Constant):
            continue  # a weight
        zero = node.inputs[2]
        if isinstance(zero, gs.Constant) and zero.values.dtype == np.int8:
            node.inputs[2] = gs.Constant(zero.name + "_uint8", np.asarray(zero.values.astype(np.int16) + 128, np.uint8))
    for tensor in twin.graph.tensors().values():
        if isinstance(tensor, gs.Variable) and tensor.dtype == np.int8:
            tensor.dtype = np.uint8
    return twin


def random_inputs(specs: Iterable[TensorSpec], *, seed: int = 0, dim_value: int = 1) -> dict[str, np.ndarray]:
    """Inputs of the right shapes and dtypes; symbolic dims take `dim_value`; integer inputs stay small (safe as indices)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in specs:
        shape = tuple(d if isinstance(d, int) else dim_value for d in (spec.shape or ()))
        if np.issubdtype(spec.dtype, np.floating):
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype == np.bool_:
            feeds[spec.name] = rng.integers(0, 2, shape).astype(np.bool_)
        else:
            feeds[spec.name] = rng.integers(0, 8, shape).astype(spec.dtype)
    return feeds


def measure_latency(session: ort.InferenceSession, feeds: Mapping[str, np.ndarray], *, repeat: int = 20, warmup: int = 3) -> "Latency":
    names = [o.name for o in session.get_outputs()]
    feeds = dict(feeds)
    for _ in range(warmup):
        session.run(names, feeds)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        session.run(names, feeds)
        times.append(time.perf_counter() - start)
    return Latency.of(times)


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int

    @classmethod
    def of(cls, seconds: list[float]) -> "Latency":
        ms = sorted(t * 1e3 for t in seconds)
        q = statistics.quantiles(ms, n=10) if len(ms) > 1 else [ms[0]] * 9
        return cls(statistics.median(ms), q[0], q[-1], len(ms))

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Drift:
    """How far candidate outputs are from reference outputs, over all outputs and samples."""

    max_abs: float
    max_rel: float  # max abs error over the reference's max magnitude
    scale: float  # the reference's max magnitude
    cosine: float  # minimum cosine similarity over outputs
    top1_agreement: float | None  # fraction of samples whose argmax over the last axis agrees; None when not meaningful
    samples: int

    def to_json(self) -> dict:
        return asdict(self)

    def within(self, atol: float, rtol: float) -> bool:
        return bool(np.isfinite(self.max_abs)) and self.max_abs <= atol + rtol * self.scale


def compare_outputs(reference: list[Mapping[str, np.ndarray]], candidate: list[Mapping[str, np.ndarray]]) -> Drift:
    """Drift of `candidate` against `reference`: parallel lists of output dicts (one per sample batch)."""
    if len(reference) != len(candidate):
        raise ValueError("reference and candidate have different sample counts")
    max_abs, scale, cosine = 0.0, 0.0, 1.0
    agree, total = 0, 0
    for ref, cand in zip(reference, candidate):
        for name, r in ref.items():
            if name not in cand:
                raise EffcError(f"candidate has no output named {name!r}")
            c = cand[name]
            if r.shape != c.shape:
                raise EffcError(f"output {name!r}: shape {list(c.shape)} differs from reference {list(r.shape)}")
            r64, c64 = r.astype(np.float64), c.astype(np.float64)
            if r.size == 0:
                continue
            diff = np.atleast_1d(np.abs(r64 - c64))  # rank-0 outputs too: a 0-d difference is a numpy scalar
            # NaN where only one side has it (or Inf against a number) is infinitely far; NaN on both sides agrees
            diff[np.isnan(r64) & np.isnan(c64)] = 0.0
            diff[np.isnan(diff)] = np.inf
            max_abs = max(max_abs, float(np.max(diff)))
            finite = np.abs(r64[np.isfinite(r64)])
            scale = max(scale, float(np.max(finite)) if finite.size else 0.0)
            denom = np.linalg.norm(r64) * np.linalg.norm(c64)
            cosine = min(cosine, float(np.dot(r64.ravel(), c64.ravel()) / denom) if denom > 0 else float(np.array_equal(r64, c64)))
            if np.issubdtype(r.dtype, np.floating) and r.ndim >= 1 and r.shape[-1] > 1:
                agree += int(np.sum(np.argmax(r, axis=-1) == np.argmax(c, axis=-1)))
                total += int(np.prod(r.shape[:-1]))
    rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    return Drift(max_abs, rel, scale, cosine, agree / total if total else None, _sample_count(reference))


def _sample_count(batches: list[Mapping[str, np.ndarray]]) -> int:
    """Samples over all batches: the first output's leading dim per batch (1 for scalar outputs)."""
    count = 0
    for outputs in batches:
        first = next(iter(outputs.values()), None)
        count += int(first.shape[0]) if first is not None and first.ndim >= 1 else 1
    return count
