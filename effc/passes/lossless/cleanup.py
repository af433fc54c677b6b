"""Lossless cleanup passes: constant folding, identity removal, CSE, initializer dedup, dead code, and `default`.

Each pass returns `changed` exactly, so the `default` pipeline can repeat them to a fixed point.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from effc.ir import Model
from effc.ir.patterns import bypass, constant_value, graph_signature, replace_uses
from effc.pipeline.pass_base import Pass, PassResult, register_pass

# Deliberate compressed storage is never folded: int8 weights with their DequantizeLinear, and anything whose
# folded constant would be much larger than its constant inputs (the cluster pass's codebook decoders).
NEVER_FOLD = {"DequantizeLinear", "QuantizeLinear", "DynamicQuantizeLinear", "RandomNormal", "RandomUniform",
              "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


def _nbytes(tensor: gs.Tensor) -> int | None:
    if isinstance(tensor, gs.Constant):
        return int(tensor.values.nbytes)
    if tensor.shape is None or tensor.dtype is None or not all(isinstance(d, int) for d in tensor.shape):
        return None
    return int(np.prod(tensor.shape, dtype=np.int64)) * np.dtype(tensor.dtype).itemsize


def grows_storage(node: gs.Node, max_growth: float) -> bool:
    """Whether folding `node` would store much more than its constant inputs (unknown output size counts as growth)."""
    inputs = sum(_nbytes(t) or 0 for t in node.inputs if isinstance(t, gs.Constant))
    outputs = [_nbytes(t) for t in node.outputs]
    if any(size is None for size in outputs):
        return node.op not in ("Shape", "Size")
    return sum(outputs) > max(max_growth * inputs, 256)


@register_pass
class FoldConstants(Pass):
    """Evaluate nodes whose inputs are all constant (shape subgraphs included), unless that grows storage."""

    name = "fold-constants"
    kind = "lossless"

    @dataclass
    class Options:
        max_growth: float = field(default=1.5, metadata={"help": "refuse folds whose result is larger than this x inputs"})

    def run(self, model: Model, ctx) -> PassResult:
        graph = model.graph
        before = _fingerprint(model)

        def exclude(node: gs.Node) -> bool:
            return node.op in NEVER_FOLD or grows_storage(node, self.options.max_growth)

        graph.fold_constants(fold_shapes=True, error_ok=True, should_exclude_node=exclude, flatten_subgraphs=False,
                             recurse_functions=False, recurse_subgraphs=not model.declared_input_dims)
        model.cleanup()
        changed = _fingerprint(model) != before
        if changed:
            model.infer_shapes()
        return PassResult(changed, {"nodes_after": len(graph.nodes)})


def _fingerprint(model: Model) -> tuple:
    return tuple((n.op, tuple(id(t) for t in n.inputs), tuple(id(t) for t in n.outputs)) for n in model.graph.nodes)


def _is_noop(node: gs.Node) -> str | None:
    """The reason `node` computes the identity of its first input, or None."""
    x = node.inputs[0] if node.inputs else None
    out = node.outputs[0] if node.outputs else None
    if x is None or out is None or (len(node.outputs) > 1 and any(o.outputs for o in node.outputs[1:])):
        return None
    same_shape = x.shape is not None and out.shape is not None and list(x.shape) == list(out.shape) \
        and all(isinstance(d, int) for d in x.shape)
    if node.op == "Identity" or (node.op == "Dropout" and (len(node.inputs) < 3 or constant_value(node.inputs[2]) is not None
                                                          and not bool(constant_value(node.inputs[2])))):
        return node.op
    if node.op == "Cast" and x.dtype is not None and np.dtype(x.dtype) == np.dtype(onnx_dtype(node.attrs["to"])):
        return "Cast to the same type"
    if node.op == "Reshape" and same_shape:
        return "Reshape to the same shape"
    if node.op == "Transpose" and "perm" in node.attrs and list(node.attrs["perm"]) == sorted(node.attrs["perm"]):
        return "Transpose with identity permutation"
    if node.op == "Pad" and len(node.inputs) > 1 and constant_value(node.inputs[1]) is not None \
            and not np.any(constant_value(node.inputs[1])):
        return "Pad of zero"
    if node.op in ("Mul", "Add", "Sub", "Div") and len(node.inputs) == 2 and same_shape:
        neutral = 1 if node.op in ("Mul", "Div") else 0
        value = constant_value(node.inputs[1])
        if value is not None and np.all(value == neutral) and x.dtype is not None and np.dtype(x.dtype) == value.dtype:
            return f"{node.op} by {neutral}"
    return None


def onnx_dtype(to: int) -> np.dtype:
    from onnx import helper

    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(to))
    except (KeyError, TypeError):
        return np.dtype("V1")


@register_pass
class RemoveIdentity(Pass):
    """Remove no-op nodes: Identity, Dropout, same-type Cast, same-shape Reshape, identity Transpose, zero Pad, x*1, x+0."""

    name = "remove-identity"
    kind = "lossless"

    def run(self, model: Model, ctx) -> PassResult:
        removed: dict[str, int] = {}
        for node in list(model.graph.nodes):
            reason = _is_noop(node)
            if reason and bypass(model.graph, node):
                removed[reason] = removed.get(reason, 0) + 1
        if removed:
            model.cleanup()
        return PassResult(bool(removed), {"removed": sum(removed.values())}, removed or None)


@register_pass
class CommonSubexpressions(Pass):
    """Merge nodes that compute the same op with the same attributes on the same inputs."""

    name = "cse"
    kind = "lossless"

    def run(self, model: Model, ctx) -> PassResult:
        graph = model.graph
        graph.toposort()
        seen: dict[tuple, gs.Node] = {}
        merged = 0
        for node in list(graph.nodes):
            if node.op in NEVER_FOLD or not node.inputs or any(o in graph.outputs for o in node.outputs):
                continue
            key = graph_signature(node)
            first = seen.setdefault(key, node)
            if first is node:
                continue
            for mine, theirs in zip(node.outputs, first.outputs):
                replace_uses(mine, theirs)
            node.outputs.clear()
            merged += 1
        if merged:
            model.cleanup()
        return PassResult(merged > 0, {"merged": merged})


@register_pass
class DedupInitializers(Pass):
    """Make consumers of byte-identical constants (same dtype, shape and values) share one."""

    name = "dedup-initializers"
    kind = "lossless"

    def run(self, model: Model, ctx) -> PassResult:
        graph = model.graph
        canonical: dict[tuple, gs.Constant] = {}
        replaced = 0
        for node in graph.nodes:
            for i, tensor in enumerate(node.inputs):
                if not isinstance(tensor, gs.Constant) or tensor in graph.outputs:
                    continue
                values = np.asarray(tensor.values)
                key = (values.dtype.str, values.shape, values.tobytes())
                first = canonical.setdefault(key, tensor)
                if first is not tensor:
                    node.inputs[i] = first
                    replaced += 1
        if replaced:
            model.cleanup()
        return PassResult(replaced > 0, {"replaced": replaced})


@register_pass
class DeadCodeElimination(Pass):
    """Remove nodes and initializers that no graph output depends on."""

    name = "dce"
    kind = "lossless"

    def run(self, model: Model, ctx) -> PassResult:
        nodes, tensors = len(model.graph.nodes), len(model.graph.tensors())
        model.cleanup()
        removed = nodes - len(model.graph.nodes)
        return PassResult(removed > 0 or tensors != len(model.graph.tensors()), {"nodes_removed": removed})

