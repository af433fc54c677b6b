"""Kernel -> ONNX node mapping for `effc profile`, and the per-kernel table rows.

TVM's ONNX frontend keeps no node names or spans, but it emits Relax calls in the
ONNX graph's topological order, and legalization and fusion keep that order; a fused kernel's name lists the Relax
ops it contains (fused_conv2d1_add2_relu1). So the calls of one run, in order, are aligned with the ONNX nodes in
order: each op in a kernel's name claims the next unclaimed ONNX node (within a short window) whose op lowers to it,
preferring, inside a fused kernel, a consumer of a node the same call already claimed (dataflow beats order).
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass, field

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
    # the integer lowering (effc/backends/tvm/integer) requantizes inside the conv/matmul kernel: scale, round, shift
    "QuantizeLinear": ("quantize", "cast", "multiply", "tir_round", "add", "tir_clip", "clip", "maximum", "minimum"),
}
LOOKAHEAD = 16
# Ops one ONNX node's lowering emits more than once (Clip's NaN checks, once per bound): a repeat joins the node
# that already claimed it instead of claiming the next node.
REPEATING_OPS = frozenset({"tir_isnan", "where"})
# ... and per ONNX op: an integer-lowered QuantizeLinear casts twice (the int32 accumulator to float, the result to
# uint8/int8)
REPEATING_OPS_OF = {"QuantizeLinear": frozenset({"cast"})}
# Nodes claimed only to keep the calls aligned, not reported: int8's Q/DQ are bookkeeping, and strip-names renames them
ALIGNMENT_ONLY_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


@dataclass
class KernelRow:
    name: str
    calls: int  # per run
    median_ms: float  # per run, all calls together
    share: float  # of the end-to-end median
    onnx_nodes: list[str] = field(default_factory=list)
    macs: int = 0
    gflops: float | None = None  # 2*MACs / time, when MACs are known
    arithmetic: str | None = None  # "integer" | "float" for a conv/matmul kernel of an int8 artifact (effc.json)


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
            owner = next((j for j, ops in this_call.items() if op in lowers_to(onnx_nodes[j][1]) and (op not in ops or op in REPEATING_OPS or op in REPEATING_OPS_OF.get(onnx_nodes[j][1], ()))), None)
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
        nodes = [onnx_nodes[j] for j in mapping.get(symbol, []) if onnx_nodes[j][1] not in ALIGNMENT_ONLY_OPS]
        macs = int(sum(n[2] for n in nodes))
        rows.append(KernelRow(symbol, calls.get(symbol, 0), ms, ms / e2e_ms if e2e_ms else 0.0,
                              sorted({n[0] for n in nodes}), macs, 2 * macs / (ms * 1e6) if macs and ms > 0 else None))
    return sorted(rows, key=lambda r: -r.median_ms)
