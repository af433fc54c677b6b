"""`strip-names`: short names and no spelled-out defaults, for deployment builds where both are dead weight
(like TFLite's strip).

Graph inputs and outputs keep their names (callers feed and read them), and so does every node except the
Quantize/DequantizeLinear pairs int8 inserts and the nodes computed from constants only (cluster's decoders):
`effc profile` maps kernels back to ONNX node names (the artifact's `onnx_nodes`), and those must stay the names
of the source model's compute nodes; constant subgraphs are folded before any kernel runs. Attributes equal to
their default (the operator schema's, or the spec's all-ones strides and dilations and zero pads) are dropped:
a Conv then spells only its kernel shape and pads.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from effc.ir import Model
from effc.pipeline.pass_base import Pass, PassResult, register_pass

# Nodes whose names nobody reads back: int8's Q/DQ pairs never map to a kernel of their own.
RENAMED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
# the spec's defaults that schemas leave unstated: all-ones strides and dilations, zero pads
WINDOW_OPS = frozenset({"Conv", "ConvTranspose", "ConvInteger", "MaxPool", "AveragePool", "LpPool"})
WINDOW_DEFAULTS = {"strides": 1, "dilations": 1, "pads": 0}


def base36(number: int) -> str:
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = DIGITS[digit] + text
        if not number:
            return text


def short_names(prefix: str, taken: set[str]) -> Iterator[str]:
    """prefix + 0, 1, ..., z, 10, ... (base 36), skipping names in `taken`."""
    i = 0
    while True:
        name = prefix + base36(i)
        i += 1
        if name not in taken:
            yield name


@register_pass
class StripNames(Pass):
    """Give intermediate tensors, initializers and int8's Q/DQ nodes short names (graph inputs, outputs and compute nodes keep theirs)."""

    name = "strip-names"
    kind = "lossless"

    def run(self, model: Model, ctx) -> PassResult:
        graph = model.graph
        graphs = [graph, *graph.subgraphs(recursive=True)]
        kept = {id(t) for t in (*graph.inputs, *graph.outputs)}
        # Subgraphs (If/Loop/Scan bodies) hold the outer graph's tensor objects where they read an outer value,
        # so renaming each object once renames every reference to it consistently, in every scope.
        tensors: dict[int, gs.Tensor] = {}
        for g in graphs:
            for t in [*g.inputs, *g.outputs, *g.tensors().values()]:
                if id(t) not in kept and t.name:  # an empty name is an omitted optional input
                    tensors.setdefault(id(t), t)
        from_constants = {id(n) for g in graphs for n in constant_nodes(g)}
        nodes = [n for g in graphs for n in g.nodes if n.op in RENAMED_OPS or id(n) in from_constants]
        kept_names = {t.name for t in (*graph.inputs, *graph.outputs)}
        renamed_ids = {id(n) for n in nodes}
        node_names = {n.name for g in graphs for n in g.nodes if id(n) not in renamed_ids}
        tensor_names, qdq_names = short_names("", kept_names), short_names("q", node_names)
        renamed = 0
        for tensor in tensors.values():
            tensor.name, old = next(tensor_names), tensor.name
            renamed += tensor.name != old
        for node in nodes:
            node.name, old = next(qdq_names), node.name
            renamed += node.name != old
        dropped = sum(drop_default_attributes(n, model.opset) for g in graphs for n in g.nodes)
        return PassResult(renamed + dropped > 0, {"tensors": len(tensors), "nodes": len(nodes), "default_attributes": dropped})


def constant_nodes(graph: gs.Graph) -> list[gs.Node]:
    """Nodes of `graph` with inputs (all of them) computed from constants only: decoders and other constant
    subgraphs, which ONNX Runtime and TVM fold before anything runs. Subgraph-holding nodes are never counted."""
    constant: set[int] = set()
    found = []
    for node in graph.nodes:  # topologically sorted: a producer comes before its consumers
        if node.inputs and not any(isinstance(v, gs.Graph) for v in node.attrs.values()) and all(
                not t.name or isinstance(t, gs.Constant) or id(t) in constant for t in node.inputs):
            found.append(node)
            constant.update(id(t) for t in node.outputs)
    return found


def drop_default_attributes(node: gs.Node, opset: int) -> int:
    """Remove `node`'s numeric attributes equal to their default; returns how many."""
    try:
        schema = onnx.defs.get_schema(node.op, opset, node.domain or "")
    except onnx.defs.SchemaError:
        return 0
    dropped = 0
    for name, value in list(node.attrs.items()):
        if isinstance(value, (bool, int, float)) and name in schema.attributes:
            default = schema.attributes[name].default_value
            if default.type in (onnx.AttributeProto.INT, onnx.AttributeProto.FLOAT) \
                    and onnx.helper.get_attribute_value(default) == value:
                del node.attrs[name]
                dropped += 1
        elif node.op in WINDOW_OPS and name in WINDOW_DEFAULTS and isinstance(value, (list, tuple)) \
                and np.all(np.asarray(value) == WINDOW_DEFAULTS[name]):
            del node.attrs[name]
            dropped += 1
    return dropped
