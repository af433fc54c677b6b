"""Fusion rules for the decomposed LayerNormalization, Softmax and GELU that exporters emit.

Each pattern is matched from its last node (the anchor); `check_*` returns a refusal reason or None, `rewrite_*`
replaces the whole chain by the single ONNX op. Gelu is an ONNX op from opset 20 only, so GELU is left alone in
models of a lower opset (ONNX Runtime and TVM both fuse the erf form themselves).
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from effc.ir import Model
from effc.passes.patterns import constant_value, producer


def _reduce_axes(node: gs.Node) -> list[int] | None:
    if len(node.inputs) > 1 and node.inputs[1].name:
        axes = constant_value(node.inputs[1])
        return None if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]
    axes = node.attrs.get("axes")
    return None if axes is None else [int(a) for a in axes]


def _is_last_axis(node: gs.Node, rank: int | None) -> bool:
    axes = _reduce_axes(node)
    return bool(axes) and len(axes) == 1 and rank is not None and axes[0] in (-1, rank - 1) and node.attrs.get("keepdims", 1) == 1


def _only_read_by(tensor: gs.Tensor, readers: list[gs.Node], graph: gs.Graph) -> bool:
    return all(any(c is r for r in readers) for c in tensor.outputs) and not any(tensor is o for o in graph.outputs)


def _scalar(tensor: gs.Tensor) -> float | None:
    value = constant_value(tensor)
    return float(value.reshape(())) if value is not None and value.size == 1 else None


def _other_input(node: gs.Node, tensor: gs.Tensor) -> gs.Tensor:
    return node.inputs[1] if node.inputs[0] is tensor else node.inputs[0]


# ---------------------------------------------------------------- LayerNormalization
# y = (x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps)  [* gamma] [+ beta], over the last axis


def _layernorm_core(graph: gs.Graph, div: gs.Node) -> tuple | str:
    diff, root = div.inputs
    sub, sqrt = producer(diff), producer(root)
    if sub is None or sub.op != "Sub" or sqrt is None or sqrt.op != "Sqrt":
        return "not (x - mean) / sqrt(...)"
    x, mean = sub.inputs
    reduce_mean = producer(mean)
    rank = len(x.shape) if x.shape is not None else None
    if reduce_mean is None or reduce_mean.op != "ReduceMean" or reduce_mean.inputs[0] is not x or not _is_last_axis(reduce_mean, rank):
        return "mean is not ReduceMean(x) over the last axis"
    add = producer(sqrt.inputs[0])
    if add is None or add.op != "Add":
        return "no epsilon Add under the Sqrt"
    var = next((t for t in add.inputs if constant_value(t) is None), None)
    eps = _scalar(_other_input(add, var)) if var is not None else None
    reduce_var, square = producer(var) if var is not None else None, None
    if eps is None or reduce_var is None or reduce_var.op != "ReduceMean" or not _is_last_axis(reduce_var, rank):
        return "variance is not ReduceMean(...) + constant epsilon"
    square = producer(reduce_var.inputs[0])
    squares_diff = square is not None and (
        (square.op == "Pow" and square.inputs[0] is diff and _scalar(square.inputs[1]) == 2.0)
        or (square.op == "Mul" and square.inputs[0] is diff and square.inputs[1] is diff))
    if not squares_diff:
        return "variance does not square (x - mean)"
    inner = [sub, reduce_mean, square, reduce_var, add, sqrt, div]
    if not (_only_read_by(mean, [sub], graph) and _only_read_by(diff, [square, div], graph)
            and all(_only_read_by(n.outputs[0], [inner[i + 1]], graph) for i, n in enumerate(inner[2:-1], start=2))):
        return "an intermediate tensor has readers outside the pattern"
    return x, eps, inner


def _affine_tail(graph: gs.Graph, div: gs.Node, channels) -> tuple:
    """Optional Mul(gamma) then Add(beta) after the normalization; returns (gamma, beta, last node, nodes)."""
    gamma = beta = None
    last, nodes = div, []
    readers = div.outputs[0].outputs
    if len(readers) == 1 and readers[0].op == "Mul" and not any(div.outputs[0] is o for o in graph.outputs):
        value = constant_value(_other_input(readers[0], div.outputs[0]))
        if value is not None and value.size == channels:
            gamma, last = value.reshape(-1), readers[0]
            nodes.append(last)
    readers = last.outputs[0].outputs
    if len(readers) == 1 and readers[0].op == "Add" and not any(last.outputs[0] is o for o in graph.outputs):
        value = constant_value(_other_input(readers[0], last.outputs[0]))
        if value is not None and value.size == channels:
            beta, last = value.reshape(-1), readers[0]
            nodes.append(last)
    return gamma, beta, last, nodes


def check_layernorm(graph: gs.Graph, div: gs.Node) -> str | None:
    core = _layernorm_core(graph, div)
    if isinstance(core, str):
        return core
    x = core[0]
    if x.shape is None or not isinstance(x.shape[-1], int) or x.dtype is None:
        return "the normalized axis has no static size"
    return None


def rewrite_layernorm(model: Model, div: gs.Node) -> None:
    x, eps, inner = _layernorm_core(model.graph, div)
    channels = x.shape[-1]
    dtype = np.dtype(x.dtype)
    gamma, beta, last, tail = _affine_tail(model.graph, div, channels)
    gamma = np.ones(channels, dtype) if gamma is None else gamma.astype(dtype)
    beta = np.zeros(channels, dtype) if beta is None else beta.astype(dtype)
    name = model.unique_name(f"{div.name}/layernorm")
    out = last.outputs[0]
    node = gs.Node("LayerNormalization", name, {"axis": -1, "epsilon": eps},
                   inputs=[x, gs.Constant(f"{name}/scale", gamma), gs.Constant(f"{name}/bias", beta)], outputs=[out])
    for n in [*inner, *tail]:
        n.outputs.clear()
        n.inputs.clear()
    model.graph.nodes.append(node)


# ---------------------------------------------------------------- Softmax
# y = exp(x [- max(x)]) / sum(exp(x [- max(x)])) over one axis


def _softmax_parts(graph: gs.Graph, div: gs.Node) -> tuple | str:
    e, total = div.inputs
    exp, reduce_sum = producer(e), producer(total)
    if exp is None or exp.op != "Exp" or reduce_sum is None or reduce_sum.op != "ReduceSum" or reduce_sum.inputs[0] is not e:
        return "not exp(.) / ReduceSum(exp(.))"
    axes = _reduce_axes(reduce_sum)
    if not axes or len(axes) != 1 or reduce_sum.attrs.get("keepdims", 1) != 1:
        return "ReduceSum is not over one axis with keepdims"
    nodes = [exp, reduce_sum, div]
    x = exp.inputs[0]
    sub = producer(x)
    if sub is not None and sub.op == "Sub":
        reduce_max = producer(sub.inputs[1])
        if reduce_max is not None and reduce_max.op == "ReduceMax" and reduce_max.inputs[0] is sub.inputs[0] \
                and _reduce_axes(reduce_max) == axes and _only_read_by(sub.outputs[0], [exp], graph) \
                and _only_read_by(reduce_max.outputs[0], [sub], graph):
            nodes = [reduce_max, sub, *nodes]
            x = sub.inputs[0]
    if not _only_read_by(e, [reduce_sum, div], graph) or not _only_read_by(total, [div], graph):
        return "an intermediate tensor has readers outside the pattern"
    return x, axes[0], nodes


def check_softmax(graph: gs.Graph, div: gs.Node) -> str | None:
    parts = _softmax_parts(graph, div)
    return parts if isinstance(parts, str) else None


def rewrite_softmax(model: Model, div: gs.Node) -> None:
    x, axis, nodes = _softmax_parts(model.graph, div)
    out = div.outputs[0]
    node = gs.Node("Softmax", model.unique_name(f"{div.name}/softmax"), {"axis": axis}, inputs=[x], outputs=[out])
    for n in nodes:
        n.outputs.clear()
        n.inputs.clear()
    model.graph.nodes.append(node)


# ---------------------------------------------------------------- GELU (opset >= 20)
# y = (x * (erf(x / sqrt(2)) + 1)) * 0.5, the exact form exporters emit


def _gelu_parts(graph: gs.Graph, half: gs.Node) -> tuple | str:
    if (graph.opset or 0) < 20:
        return f"Gelu needs opset 20, the model has {graph.opset}"
    prod = next((t for t in half.inputs if _scalar(t) is None), None)
    if prod is None or _scalar(_other_input(half, prod)) != 0.5:
        return "not (...) * 0.5"
    mul = producer(prod)
    if mul is None or mul.op != "Mul":
        return "not x * (erf(...) + 1) * 0.5"
    for x, other in ((mul.inputs[0], mul.inputs[1]), (mul.inputs[1], mul.inputs[0])):
        add = producer(other)
        if add is None or add.op != "Add":
            continue
        erf_out = next((t for t in add.inputs if _scalar(t) is None), None)
        erf = producer(erf_out) if erf_out is not None else None
        if erf is None or erf.op != "Erf" or _scalar(_other_input(add, erf_out)) != 1.0:
            continue
        div = producer(erf.inputs[0])
        if div is None or div.op != "Div" or div.inputs[0] is not x:
            continue
        root2 = _scalar(div.inputs[1])
        if root2 is None or not math.isclose(root2, math.sqrt(2), rel_tol=1e-4):
            continue
        nodes = [div, erf, add, mul, half]
        if not all(_only_read_by(n.outputs[0], [nodes[i + 1]], graph) for i, n in enumerate(nodes[:-1])):
            return "an intermediate tensor has readers outside the pattern"
        return x, nodes
    return "no erf(x / sqrt(2)) + 1 under the product"


def check_gelu(graph: gs.Graph, half: gs.Node) -> str | None:
    parts = _gelu_parts(graph, half)
    return parts if isinstance(parts, str) else None


def rewrite_gelu(model: Model, half: gs.Node) -> None:
    x, nodes = _gelu_parts(model.graph, half)
    out = half.outputs[0]
    node = gs.Node("Gelu", model.unique_name(f"{half.name}/gelu"), {"approximate": "none"}, inputs=[x], outputs=[out])
    for n in nodes:
        n.outputs.clear()
        n.inputs.clear()
    model.graph.nodes.append(node)


# ---------------------------------------------------------------- shape-op chains
SHAPE_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")


def check_static_shape_chain(graph: gs.Graph, node: gs.Node) -> str | None:
    """Squeeze/Unsqueeze/Flatten after another shape-only op, with a fully static output: one Reshape does both."""
    prev = producer(node.inputs[0])
    if prev is None or prev.op not in SHAPE_OPS:
        return "input is not a Reshape/Flatten/Squeeze/Unsqueeze"
    out = node.outputs[0].shape
    if out is None or not all(isinstance(d, int) for d in out):
        return "output shape is not static"
    if not _only_read_by(node.inputs[0], [node], graph):
        return "the first op has other readers"
    return None


def rewrite_static_shape_chain(model: Model, node: gs.Node) -> None:
    prev = producer(node.inputs[0])
    target = gs.Constant(model.unique_name(f"{node.name}/shape"), np.array(node.outputs[0].shape, np.int64))
    reshape = gs.Node("Reshape", model.unique_name(f"{node.name}/reshape"), inputs=[prev.inputs[0], target], outputs=[node.outputs[0]])
    node.outputs.clear()
    node.inputs.clear()
    model.graph.nodes.append(reshape)


def _slice_params(node: gs.Node) -> tuple | None:
    """(starts, ends, axes, steps) of a Slice whose parameters are all constant, or None."""
    def given(i: int) -> bool:
        return len(node.inputs) > i and bool(node.inputs[i].name)

    values = [constant_value(node.inputs[i]) if given(i) else None for i in range(1, 5)]
    if any(given(i) and values[i - 1] is None for i in range(1, 5)) or values[0] is None or values[1] is None:
        return None
    starts, ends, axes, steps = values
    count = len(starts)
    return (starts.astype(np.int64), ends.astype(np.int64),
            np.arange(count, dtype=np.int64) if axes is None else axes.astype(np.int64),
            np.ones(count, np.int64) if steps is None else steps.astype(np.int64))


def check_slice_pair(graph: gs.Graph, node: gs.Node) -> str | None:
    prev = producer(node.inputs[0])
    if prev is None or prev.op != "Slice":
        return "input is not a Slice"
    first, second = _slice_params(prev), _slice_params(node)
    if first is None or second is None:
        return "a Slice has non-constant parameters"
    rank = len(node.inputs[0].shape) if node.inputs[0].shape is not None else None
    if rank is None:
        return "rank unknown"
    axes_a, axes_b = set(first[2] % rank), set(second[2] % rank)
    if axes_a & axes_b:
        return "the Slices cut the same axis"
    if not _only_read_by(node.inputs[0], [node], graph):
        return "the first Slice has other readers"
    return None


def rewrite_slice_pair(model: Model, node: gs.Node) -> None:
    prev = producer(node.inputs[0])
    merged = [np.concatenate([a, b]) for a, b in zip(_slice_params(prev), _slice_params(node))]
    names = ("starts", "ends", "axes", "steps")
    source = prev.inputs[0]
    node.inputs.clear()
    node.inputs.extend([source, *(gs.Constant(model.unique_name(f"{node.name}/{n}"), v) for n, v in zip(names, merged))])
