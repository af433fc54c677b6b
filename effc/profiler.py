"""`effc profile`: end-to-end latency, per-kernel times mapped back to ONNX nodes, memory, and ONNX Runtime beside it.

Kernel -> ONNX node mapping: TVM's ONNX frontend keeps no node names or spans, but it emits Relax calls in the
ONNX graph's topological order, and legalization and fusion keep that order; a fused kernel's name lists the Relax
ops it contains (fused_conv2d1_add2_relu1). So the calls of one run, in order, are aligned with the ONNX nodes in
order: each op in a kernel's name claims the next unclaimed ONNX node (within a short window) whose op lowers to it,
preferring, inside a fused kernel, a consumer of a node the same call already claimed (dataflow beats order).
"""

from __future__ import annotations

import re
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx_graphsurgeon as gs

from effc.errors import EffcError
from effc.ir import Model
from effc.runtime import Latency

BUILTIN_PREFIXES = ("vm.builtin.", "vm.", "relax.", "runtime.")
# ONNX op -> the Relax op names its lowering produces (default: the op's name in lower case).
RELAX_OPS = {
    # a Conv's bias lowers to an add fused into its kernel (BatchNorm folded into Conv leaves one on every conv)
    "Conv": ("conv1d", "conv2d", "conv3d", "add"), "ConvTranspose": ("conv2d_transpose", "conv1d_transpose", "add"),
    "Gemm": ("matmul", "add", "multiply"), "MatMul": ("matmul",), "Add": ("add",),
    "Sub": ("subtract",), "Mul": ("multiply",), "Div": ("divide",), "Relu": ("relu",),
    "Clip": ("clip", "minimum", "maximum", "tir_isnan", "where"),  # Clip lowers with NaN propagation
    "BatchNormalization": ("batch_norm",), "MaxPool": ("max_pool2d", "max_pool1d"), "AveragePool": ("avg_pool2d",),
    "GlobalAveragePool": ("mean", "adaptive_avg_pool2d", "sum", "divide"), "Softmax": ("softmax",),
    "LayerNormalization": ("layer_norm",), "Concat": ("concatenate", "concat"), "Gather": ("take", "less", "add", "where"),
    "Transpose": ("permute_dims", "transpose"), "Reshape": ("reshape",), "Flatten": ("reshape",),
    "Squeeze": ("squeeze", "reshape"), "Unsqueeze": ("expand_dims", "reshape"), "Pow": ("power",),
    "ReduceMean": ("mean",), "ReduceSum": ("sum",), "Cast": ("astype", "cast"), "Expand": ("broadcast_to",),
    "Slice": ("strided_slice", "dynamic_strided_slice"), "Pad": ("pad",), "HardSigmoid": ("clip", "add", "multiply", "divide"),
    "HardSwish": ("clip", "add", "multiply", "divide"), "Gelu": ("gelu",), "Erf": ("erf",), "Sqrt": ("sqrt",),
}
LOOKAHEAD = 16
# Ops one ONNX node's lowering emits more than once (Clip's NaN checks, once per bound): a repeat joins the node
# that already claimed it instead of claiming the next node.
REPEATING_OPS = frozenset({"tir_isnan", "where"})


@dataclass
class KernelRow:
    name: str
    calls: int  # per run
    median_ms: float  # per run, all calls together
    share: float  # of the end-to-end median
    onnx_nodes: list[str] = field(default_factory=list)
    macs: int = 0
    gflops: float | None = None  # 2*MACs / time, when MACs are known


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
    kernel_total_ms: float | None
    builtin_ms: float | None
    weight_bytes: int | None
    peak_activation_bytes: int | None
    inputs: ProfileInputs = field(default_factory=lambda: ProfileInputs("random"))
    ort_latency: Latency | None = None
    ort_max_abs_diff: float | None = None

    def to_json(self) -> dict:
        data = asdict(self)
        data["latency"] = self.latency.to_json()
        data["ort_latency"] = self.ort_latency.to_json() if self.ort_latency else None
        return data


def is_builtin(symbol: str) -> bool:
    return symbol.startswith(BUILTIN_PREFIXES)


def lowers_to(onnx_op: str) -> tuple[str, ...]:
    return RELAX_OPS.get(onnx_op, (onnx_op.lower(),))


def kernel_ops(symbol: str) -> list[str]:
    """The Relax op names a kernel symbol lists, in order: fused_conv2d1_add2_relu1 -> [conv2d, add, relu]."""
    name = re.sub(r"^fused_", "", symbol)
    known = sorted({op for ops in RELAX_OPS.values() for op in ops}, key=len, reverse=True)
    return re.findall("|".join(map(re.escape, known)) + r"|[a-z][a-z0-9]*?(?=\d*(?:_|$))", name)


def map_kernels(sequence: list[str], onnx_nodes: list[list]) -> dict[str, list[int]]:
    """Kernel symbol -> indices into `onnx_nodes` ([name, op, macs, producer indices] in topological order) it computes.

    Each op of each call claims the first unclaimed ONNX node of a matching op in a window around the last claim:
    fusion may pull a node slightly ahead of its topological place (a residual branch's batch norm), and nodes that
    lower to no kernel (reshapes) are left behind.
    """
    claimed: dict[str, list[int]] = {}
    taken = [False] * len(onnx_nodes)
    last = 0
    for symbol in sequence:
        if is_builtin(symbol):
            continue
        this_call: dict[int, set[str]] = {}  # node index -> the ops of this call it accounts for
        for op in kernel_ops(symbol):
            # One ONNX node may lower to several Relax ops (Clip -> maximum, minimum; Gemm -> matmul, add).
            owner = next((j for j, ops in this_call.items() if op in lowers_to(onnx_nodes[j][1]) and (op not in ops or op in REPEATING_OPS)), None)
            if owner is not None:
                this_call[owner].add(op)
                continue
            window = range(max(0, last - LOOKAHEAD // 2), min(last + LOOKAHEAD, len(onnx_nodes)))
            # Inside a fused kernel, prefer a consumer of a node this call already claimed (the bias Add of its MatMul).
            consumers = [j for j in window if this_call and set(_producers(onnx_nodes[j])) & set(this_call)]
            for j in [*consumers, *window]:
                if not taken[j] and op in lowers_to(onnx_nodes[j][1]):
                    taken[j] = True
                    this_call[j] = {op}
                    last = max(last, j)
                    break
        if this_call:
            claimed.setdefault(symbol, []).extend(this_call)
    return claimed


def _producers(node: list) -> list[int]:
    return node[3] if len(node) > 3 else []


def kernel_rows(times: dict[str, list[float]], sequence: list[str], onnx_nodes: list[list], e2e_ms: float) -> list[KernelRow]:
    """One row per kernel (builtins excluded), slowest first."""
    mapping = map_kernels(sequence, onnx_nodes)
    calls = {s: sequence.count(s) for s in set(sequence)}
    rows = []
    for symbol, samples in times.items():
        if is_builtin(symbol):
            continue
        ms = statistics.median(samples) * 1e3
        nodes = [onnx_nodes[j] for j in mapping.get(symbol, [])]
        macs = int(sum(n[2] for n in nodes))
        rows.append(KernelRow(symbol, calls.get(symbol, 0), ms, ms / e2e_ms if e2e_ms else 0.0,
                              sorted({n[0] for n in nodes}), macs, 2 * macs / (ms * 1e6) if macs and ms > 0 else None))
    return sorted(rows, key=lambda r: -r.median_ms)


def peak_activation_bytes(model: Model) -> int:
    """Largest sum of live intermediate tensors over a topological run of `model` (inputs and outputs included,
    constants excluded); symbolic dims count as 1, tensors of unknown shape as zero."""
    nodes = list(model.graph.nodes)
    last_use: dict[int, int] = {}
    for i, node in enumerate(nodes):
        for t in node.inputs:
            last_use[id(t)] = i
    for t in model.graph.outputs:
        last_use[id(t)] = len(nodes)
    live = {id(t): _nbytes(t) for t in model.graph.inputs}
    peak = sum(live.values())
    for i, node in enumerate(nodes):
        for t in node.outputs:
            live[id(t)] = _nbytes(t)
        peak = max(peak, sum(live.values()))
        for key in [k for k in live if last_use.get(k, -1) <= i]:
            del live[key]
    return int(peak)


def _nbytes(tensor: gs.Tensor) -> int:
    if isinstance(tensor, gs.Constant) or tensor.shape is None or tensor.dtype is None:
        return 0
    try:
        itemsize = np.dtype(tensor.dtype).itemsize
    except TypeError:
        return 0
    dims = [d if isinstance(d, (int, np.integer)) and d >= 0 else 1 for d in tensor.shape]  # symbolic dims count as 1
    return int(np.prod(dims, dtype=np.int64)) * itemsize


def profile_inputs(meta: dict, inputs: str | Path | None = None, *, seed: int = 0) -> tuple[dict[str, np.ndarray], ProfileInputs]:
    """The feeds to profile an artifact (its effc.json `meta`) on: the first batch of `inputs` (.npz keyed by input
    name, or a folder of .npy), else of the calibration data it was built with while that is still there, else random
    inputs of its shapes. EffcError for `inputs` that do not exist or do not fit the artifact's inputs."""
    from effc.calib import CalibrationData
    from effc.ir import TensorSpec
    from effc.runtime import random_inputs

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


def profile_artifact(path: str | Path, *, repeat: int = 20, warmup: int = 3, rpc: str | None = None,
                     compare_ort: str | None = None, inputs: str | Path | None = None, seed: int = 0) -> Profile:
    """Profile an artifact on the first sample of `inputs`, of its calibration data or random inputs (see
    `profile_inputs`); `compare_ort` (an ONNX path) is timed on ORT beside it and compared on the same inputs."""
    from effc.artifact import load_artifact
    from effc.runtime import measure_latency, ort_session, run_session

    artifact = load_artifact(path, rpc=rpc)
    meta = artifact.meta
    feeds, fed = profile_inputs(meta, inputs, seed=seed)
    timings = artifact.runner.profile(artifact.ordered_inputs(feeds), repeat=repeat, warmup=warmup, kernels=True)
    latency = Latency.of(timings.latency_s)
    rows, kernel_ms, builtin_ms = [], None, None
    if timings.kernels_s:
        rows = kernel_rows(timings.kernels_s, timings.sequence, meta.get("onnx_nodes") or [], latency.median_ms)
        kernel_ms = sum(r.median_ms for r in rows)
        builtin_ms = sum(statistics.median(v) * 1e3 for k, v in timings.kernels_s.items() if is_builtin(k))
    profile = Profile(str(path), meta["target"]["name"], artifact.runner.where, artifact.runner.emulated, latency, rows,
                      kernel_ms, builtin_ms, meta.get("weight_bytes"), meta.get("peak_activation_bytes"), fed)
    if compare_ort:
        session = ort_session(str(compare_ort))
        profile.ort_latency = measure_latency(session, feeds, repeat=repeat, warmup=warmup)
        reference = run_session(session, feeds)
        diffs = [float(np.max(np.abs(reference[name].astype(np.float64) - out.astype(np.float64))))
                 for name, out in zip(artifact.output_names, timings.outputs) if name in reference and out.size]
        profile.ort_max_abs_diff = max(diffs) if diffs else None
    return profile
