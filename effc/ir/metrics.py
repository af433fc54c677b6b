"""Static cost of a model: nodes, parameters, bytes, multiply-accumulates per layer, peak activation memory."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx_graphsurgeon as gs

from effc.ir import Model

# Ops whose dominant cost is counted as MACs; everything else is treated as free data movement.
MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul")


@dataclass(frozen=True)
class ModelStats:
    nodes: int
    params: int
    weight_bytes: int
    file_bytes: int
    macs: int

    def to_json(self) -> dict:
        return asdict(self)


def model_stats(model: Model) -> ModelStats:
    constants = model.constants()
    return ModelStats(
        nodes=len(model.graph.nodes),
        params=int(sum(int(np.prod(c.shape)) if c.shape is not None else 0 for c in constants)),
        weight_bytes=int(sum(c.values.nbytes for c in constants)),
        file_bytes=model.serialized_size(),
        macs=int(sum(layer_macs(model).values())),
    )


def layer_macs(model: Model) -> dict[str, int]:
    """MACs of each compute node, by node name. Symbolic dims count as 1."""
    return {node.name: macs for node in model.graph.nodes if (macs := node_macs(node))}


def node_macs(node: gs.Node) -> int:
    op = node.op
    if op not in MAC_OPS or not node.outputs:
        return 0
    out = _static(node.outputs[0].shape)
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        w_index = 3 if op == "QLinearConv" else 1
        weight = _static(node.inputs[w_index].shape) if len(node.inputs) > w_index else None
        if out is None or weight is None:
            return 0
        return int(np.prod(out)) * int(np.prod(weight[1:]))
    if op == "ConvTranspose":
        inp = _static(node.inputs[0].shape)
        weight = _static(node.inputs[1].shape)
        if inp is None or weight is None:
            return 0
        return int(np.prod(inp)) * int(np.prod(weight[1:]))
    if op == "Gemm":
        a = _static(node.inputs[0].shape)
        if out is None or a is None or len(a) != 2:
            return 0
        k = a[0] if node.attrs.get("transA", 0) else a[1]
        return int(np.prod(out)) * int(k)
    # MatMul family: output elements times the reduced dimension
    a_index = 0
    a = _static(node.inputs[a_index].shape)
    if out is None or a is None or not a:
        return 0
    return int(np.prod(out)) * int(a[-1])


def _static(shape) -> tuple[int, ...] | None:
    if shape is None:
        return None
    return tuple(d if isinstance(d, (int, np.integer)) and d >= 0 else 1 for d in shape)


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
