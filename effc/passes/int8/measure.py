"""How far int8 moved a model: per-tensor SQNR and agreement against the float model, and which kernels ORT runs."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from typing import Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from effc.analysis.layer_inputs import intermediate_session
from effc.ir import Model
from effc.onnx_runtime import run_session

INTEGER_OPS = frozenset({
    "QLinearConv", "QLinearMatMul", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QGemm",
    "QLinearAdd", "QLinearMul", "QLinearConcat", "QLinearAveragePool", "QLinearGlobalAveragePool",
    "QLinearConvTranspose", "ConvInteger", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearSoftmax", "QLinearReduceMean",
    "QAttention", "NhwcQLinearConv",
})
FLOAT_RESULT_OPS = frozenset({"MatMulIntegerToFloat", "DynamicQuantizeMatMul", "ConvInteger", "MatMulInteger"})
TYPE_PRESERVING = frozenset({"MaxPool", "GlobalMaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Resize", "Gather"})
FLOAT_COMPUTE_OPS = frozenset({
    "Conv", "FusedConv", "ConvTranspose", "MatMul", "FusedMatMul", "Gemm", "FusedGemm", "Add", "Mul", "Concat",
    "AveragePool", "GlobalAveragePool", "MaxPool", "GlobalMaxPool",
})


def noise_stats(reference: Model, candidate: Model, feeds: Sequence[Mapping[str, np.ndarray]], names: Sequence[str],
                cache: dict | None = None) -> dict:
    """Per tensor: signal power and error power of `candidate` against `reference`; plus top-1 agreement of the outputs.

    `cache` (a dict the caller keeps) holds the reference's outputs between calls with the same feeds.
    """
    outputs = [t.name for t in reference.graph.outputs]
    key = tuple(names)
    cache = {} if cache is None else cache
    if key not in cache:
        ref_session = intermediate_session(reference, names)
        cache[key] = [run_session(ref_session, feed) for feed in feeds]
    cand_session = intermediate_session(candidate, names)
    signal, noise = Counter(), Counter()
    agree = total = 0
    for feed, ref in zip(feeds, cache[key]):
        cand = run_session(cand_session, feed)
        for name in {*names, *outputs}:
            r, c = ref[name].astype(np.float64), cand[name].astype(np.float64)
            signal[name] += float(np.sum(r * r))
            noise[name] += float(np.sum((r - c) ** 2))
        for name in outputs:
            if ref[name].ndim >= 1 and ref[name].shape[-1] > 1 and np.issubdtype(ref[name].dtype, np.floating):
                agree += int(np.sum(np.argmax(ref[name], -1) == np.argmax(cand[name], -1)))
                total += int(np.prod(ref[name].shape[:-1]))
    return {"signal": signal, "noise": noise, "agreement": agree / total if total else None,
            "output_sqnr": min((sqnr_db(signal[o], noise[o]) for o in outputs), default=float("inf"))}


def sqnr_db(signal: float, noise: float) -> float:
    if noise <= 0:
        return float("inf")
    return 10.0 * float(np.log10(max(signal, 1e-30) / noise))


def integer_kernels(model: Model) -> dict:
    """Which ops ONNX Runtime actually runs after its graph optimizations: integer kernels vs float compute left."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "optimized.onnx")
        options.optimized_model_filepath = path
        ort.InferenceSession(model.to_proto(portable=True).SerializeToString(), options, providers=["CPUExecutionProvider"])
        optimized = onnx.load(path)
    ops = Counter(n.op_type for n in optimized.graph.node)
    integer_tensors: set[str] = set()
    for node in optimized.graph.node:  # topological: follow integer tensors through ops that keep their type
        if node.op_type == "QuantizeLinear" or (node.op_type in INTEGER_OPS and node.op_type not in FLOAT_RESULT_OPS):
            integer_tensors.update(node.output)
        elif node.op_type in TYPE_PRESERVING and node.input and node.input[0] in integer_tensors:
            integer_tensors.update(node.output)
            if node.op_type in FLOAT_COMPUTE_OPS:
                ops[node.op_type] -= 1
                ops[f"{node.op_type}(int8)"] += 1
    return {
        "integer": dict(sorted((op, c) for op, c in ops.items() if (op in INTEGER_OPS or op.endswith("(int8)")) and c)),
        "float": dict(sorted((op, c) for op, c in ops.items() if op in FLOAT_COMPUTE_OPS and c)),
        "quantize_linear": ops.get("QuantizeLinear", 0) + ops.get("DynamicQuantizeLinear", 0),
        "dequantize_linear": ops.get("DequantizeLinear", 0),
    }
