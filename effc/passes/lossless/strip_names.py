"""`strip-names`: short names for deployment builds, where names are dead weight (like TFLite's strip).

Graph inputs and outputs keep their names (callers feed and read them), and so does every node except the
Quantize/DequantizeLinear pairs int8 inserts: `effc profile` maps kernels back to ONNX node names (the artifact's
`onnx_nodes`), and those must stay the names of the source model's compute nodes.
"""

from __future__ import annotations

from typing import Iterator

import onnx_graphsurgeon as gs

from effc.ir import Model
from effc.pipeline.pass_base import Pass, PassResult, register_pass

# Nodes whose names nobody reads back: int8's Q/DQ pairs never map to a kernel of their own.
RENAMED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


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
        nodes = [n for g in graphs for n in g.nodes if n.op in RENAMED_OPS]
        kept_names = {t.name for t in (*graph.inputs, *graph.outputs)}
        node_names = {n.name for g in graphs for n in g.nodes if n.op not in RENAMED_OPS}
        tensor_names, qdq_names = short_names("", kept_names), short_names("q", node_names)
        renamed = 0
        for tensor in tensors.values():
            tensor.name, old = next(tensor_names), tensor.name
            renamed += tensor.name != old
        for node in nodes:
            node.name, old = next(qdq_names), node.name
            renamed += node.name != old
        return PassResult(renamed > 0, {"tensors": len(tensors), "nodes": len(nodes)})
