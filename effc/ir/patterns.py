"""Small graph helpers shared by the lossless passes: constant lookup, rewiring, node signatures."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs


def constant_value(tensor: gs.Tensor) -> np.ndarray | None:
    """The value of a constant tensor (initializer or Constant node output), else None."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if len(tensor.inputs) == 1 and tensor.inputs[0].op == "Constant" and "value" in tensor.inputs[0].attrs:
        value = tensor.inputs[0].attrs["value"]
        return np.asarray(value.values) if isinstance(value, gs.Constant) else None
    return None


def producer(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.inputs[0] if len(tensor.inputs) == 1 else None


def sole_consumer(tensor: gs.Tensor, graph: gs.Graph) -> gs.Node | None:
    """The only node reading `tensor`, when it is not also a graph output."""
    if len(tensor.outputs) != 1 or any(tensor is o for o in graph.outputs):
        return None
    return tensor.outputs[0]


def replace_uses(old: gs.Tensor, new: gs.Tensor) -> None:
    for consumer in list(old.outputs):
        for i, t in enumerate(consumer.inputs):
            if t is old:
                consumer.inputs[i] = new


def bypass(graph: gs.Graph, node: gs.Node, source: gs.Tensor | None = None) -> bool:
    """Make readers of node's first output read `source` (default: its first input) instead; False if impossible.

    A graph output keeps its name: the producer of `source` writes it directly, which needs `source` to be a
    node output read by nobody else."""
    x = node.inputs[0] if source is None else source
    out = node.outputs[0]
    if not any(out is o for o in graph.outputs):
        replace_uses(out, x)
        node.outputs.clear()
        node.inputs.clear()  # the dead node must not count as a reader of its inputs any more
        return True
    prod = producer(x)
    if prod is None or any(x is t for t in graph.inputs) or any(x is o for o in graph.outputs) \
            or len(x.outputs) != 1 or x.outputs[0] is not node:
        return False
    node.inputs.clear()
    node.outputs.clear()
    prod.outputs[prod.outputs.index(x)] = out
    return True


def graph_signature(node: gs.Node) -> tuple:
    """What a node computes, for common-subexpression detection: op, domain, attributes and input identities."""
    return (node.op, node.domain, tuple(id(t) for t in node.inputs), len(node.outputs),
            tuple(sorted((k, _attr_key(v)) for k, v in node.attrs.items())))


def _attr_key(value) -> object:
    if isinstance(value, gs.Constant):
        array = np.asarray(value.values)
        return ("tensor", array.dtype.str, array.shape, array.tobytes())
    if isinstance(value, (list, tuple)):
        return tuple(_attr_key(v) for v in value)
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (gs.Graph, gs.Tensor)):
        return ("object", id(value))
    return value
