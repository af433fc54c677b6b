"""Fusion rules for the decomposed LayerNormalization, Softmax and GELU that exporters emit.

Each pattern is matched from one characteristic node (the anchor: the normalizing Div, the Erf or Tanh);
`check_*` returns a refusal reason or None, `rewrite_*` replaces the whole chain by the single ONNX op. Gelu is an
ONNX op from opset 20 only, so GELU is left alone in models of a lower opset (ONNX Runtime and TVM both fuse the
erf form themselves).
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from effc.ir import Model
from effc.ir.patterns import constant_value, producer


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
# erf form:  y = 0.5 * x * (1 + erf(x / sqrt(2)))                           -> Gelu(approximate="none")
# tanh form: y = 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))    -> Gelu(approximate="tanh")
# Matched from the Erf/Tanh node: its argument must be built from one tensor x as above (x / sqrt(2) or
# x * (1/sqrt(2)); x^3 as Pow(x, 3), x * x * x), and 1 + erf(...) must be multiplied by x and 0.5 in any order
# or grouping that exporters write ((x * u) * 0.5, (0.5 * x) * u, x * (u * 0.5), ...).

def _const_input(node: gs.Node, value: float, rel_tol: float = 1e-4) -> gs.Tensor | None:
    """The non-constant input of a binary `node` whose other input is the scalar `value`, else None."""
    for i in (0, 1):
        other = _scalar(node.inputs[1 - i])
        if other is not None and math.isclose(other, value, rel_tol=rel_tol) and _scalar(node.inputs[i]) is None:
            return node.inputs[i]
    return None


def _erf_argument(arg: gs.Tensor) -> tuple[gs.Tensor, list[gs.Node]] | None:
    """(x, nodes) when `arg` is x / sqrt(2) or x * (1 / sqrt(2))."""
    node = producer(arg)
    if node is not None and node.op == "Div" and _scalar(node.inputs[0]) is None:
        root2 = _scalar(node.inputs[1])
        if root2 is not None and math.isclose(root2, math.sqrt(2), rel_tol=1e-4):
            return node.inputs[0], [node]
    if node is not None and node.op == "Mul":
        x = _const_input(node, 1 / math.sqrt(2))
        if x is not None:
            return x, [node]
    return None


def _cube_of(tensor: gs.Tensor) -> tuple[gs.Tensor, list[gs.Node]] | None:
    """(x, nodes) when `tensor` is Pow(x, 3), x * (x * x) or (x * x) * x."""
    node = producer(tensor)
    if node is None:
        return None
    if node.op == "Pow" and _scalar(node.inputs[1]) == 3.0:
        return node.inputs[0], [node]
    if node.op == "Mul":
        for i in (0, 1):
            square = producer(node.inputs[1 - i])
            x = node.inputs[i]
            if square is not None and square.op == "Mul" and square.inputs[0] is x and square.inputs[1] is x:
                return x, [square, node]
    return None


def _tanh_argument(arg: gs.Tensor) -> tuple[gs.Tensor, list[gs.Node]] | None:
    """(x, nodes) when `arg` is sqrt(2/pi) * (x + 0.044715 * x^3)."""
    scaled = producer(arg)
    inner = _const_input(scaled, math.sqrt(2 / math.pi)) if scaled is not None and scaled.op == "Mul" else None
    add = producer(inner) if inner is not None else None
    if add is None or add.op != "Add":
        return None
    for i in (0, 1):
        x, term = add.inputs[i], producer(add.inputs[1 - i])
        cube = _const_input(term, 0.044715) if term is not None and term.op == "Mul" else None
        found = _cube_of(cube) if cube is not None else None
        if found is not None and found[0] is x:
            return x, [*found[1], term, add, scaled]
    return None


def _half_x_times(graph: gs.Graph, u: gs.Tensor, x: gs.Tensor) -> tuple[gs.Node, list[gs.Node]] | None:
    """(last node, nodes) of the product u * x * 0.5 built on `u` by one or two Muls."""
    factors, nodes, current = [], [], u
    while sorted(factors) != [0.5, 1.0]:  # 1.0 stands for x
        reader = current.outputs[0] if len(current.outputs) == 1 and not any(current is o for o in graph.outputs) else None
        if reader is None or reader.op != "Mul":
            return None
        other = _other_input(reader, current)
        half_x = producer(other)
        if other is x:
            factors.append(1.0)
        elif _scalar(other) == 0.5:
            factors.append(0.5)
        elif half_x is not None and half_x.op == "Mul" and _const_input(half_x, 0.5) is x and _only_read_by(other, [reader], graph):
            factors += [0.5, 1.0]
            nodes.append(half_x)
        else:
            return None
        nodes.append(reader)
        current = reader.outputs[0]
        if len(factors) > 2:
            return None
    return nodes[-1], nodes


def _gelu_parts(graph: gs.Graph, anchor: gs.Node) -> tuple | str:
    argument = _erf_argument(anchor.inputs[0]) if anchor.op == "Erf" else _tanh_argument(anchor.inputs[0])
    if argument is None:
        return "argument is not x / sqrt(2)" if anchor.op == "Erf" else "argument is not sqrt(2/pi) * (x + 0.044715 x^3)"
    x, inner = argument
    add = anchor.outputs[0].outputs[0] if len(anchor.outputs[0].outputs) == 1 else None
    if add is None or add.op != "Add" or _const_input(add, 1.0, rel_tol=0) is not anchor.outputs[0]:
        return f"{anchor.op.lower()}(...) is not followed by + 1 alone"
    product = _half_x_times(graph, add.outputs[0], x)
    if product is None:
        return f"1 + {anchor.op.lower()}(...) is not multiplied by x and 0.5"
    last, outer = product
    nodes = [*inner, anchor, add, *outer]
    if not all(_only_read_by(t, nodes, graph) for n in nodes if n is not last for t in n.outputs):
        return "an intermediate tensor has readers outside the pattern"
    if (graph.opset or 0) < 20:
        return f"a GELU, but Gelu needs opset 20 and the model has {graph.opset}"
    return x, nodes, last


def check_gelu(graph: gs.Graph, anchor: gs.Node) -> str | None:
    parts = _gelu_parts(graph, anchor)
    return parts if isinstance(parts, str) else None


def rewrite_gelu(model: Model, anchor: gs.Node) -> None:
    x, nodes, last = _gelu_parts(model.graph, anchor)
    out = last.outputs[0]
    approximate = "none" if anchor.op == "Erf" else "tanh"
    node = gs.Node("Gelu", model.unique_name(f"{last.name}/gelu"), {"approximate": approximate}, inputs=[x], outputs=[out])
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
