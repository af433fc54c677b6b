"""Lossless folding and fusion: BatchNorm into Conv, and `fuse`, a set of small rewrite rules.

Each rule is (pattern op, check that returns a refusal reason or None, rewrite). `fuse(explain=true)` reports,
per rule, why it did not fire where its anchor op appeared.

Activation fusion is left to the backends on purpose: ONNX Runtime fuses Conv+Relu/Clip and MatMul+Add itself at
session creation, and TVM's FuseOps fuses elementwise epilogues into the producing kernel, so rewriting them into
contrib ops here would only make the graph non-standard (and unreadable to the TVM frontend) with no speed gain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from effc.ir import Model
from effc.ir.folding import fold_batchnorm
from effc.ir.patterns import constant_value, producer, sole_consumer
from effc.passes.lossless import fold_conv  # noqa: F401  (registers fold-pad, fold-scale)
from effc.passes.lossless.fusion_patterns import (
    check_gelu,
    check_layernorm,
    check_slice_pair,
    check_softmax,
    check_static_shape_chain,
    rewrite_gelu,
    rewrite_layernorm,
    rewrite_slice_pair,
    rewrite_softmax,
    rewrite_static_shape_chain,
)
from effc.pipeline.pass_base import Pass, PassResult, register_pass


@register_pass
class FoldBatchNorm(Pass):
    """Fold BatchNormalization into the Conv that produces its input; with no Conv, rewrite it as Mul+Add."""

    name = "fold-bn"
    kind = "lossless"

    @dataclass
    class Options:
        standalone: bool = True  # a BatchNorm with no Conv before it becomes Mul+Add (standard ops every backend fuses)

    def run(self, model: Model, ctx) -> PassResult:
        folded = fold_batchnorm(model)
        split = _batchnorm_to_mul_add(model) if self.options.standalone else 0
        return PassResult(folded + split > 0, {"folded": folded, "to_mul_add": split})


def _batchnorm_to_mul_add(model: Model) -> int:
    """Rewrite inference BatchNormalization with constant parameters as x * scale + shift."""
    count = 0
    for bn in [n for n in model.graph.nodes if n.op == "BatchNormalization"]:
        params = [constant_value(t) for t in bn.inputs[1:5]]
        x = bn.inputs[0]
        if any(p is None for p in params) or len(bn.outputs) != 1 or x.shape is None or len(x.shape) < 2 \
                or bn.attrs.get("training_mode", 0):
            continue
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)
        scale = gamma / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
        shape = (-1,) + (1,) * (len(x.shape) - 2)
        dtype = np.dtype(x.dtype)
        scaled = gs.Variable(model.unique_name(f"{bn.name}/scaled"), dtype, x.shape)
        mul = gs.Node("Mul", model.unique_name(f"{bn.name}/mul"), inputs=[
            x, gs.Constant(model.unique_name(f"{bn.name}_scale"), scale.reshape(shape).astype(dtype))], outputs=[scaled])
        add = gs.Node("Add", model.unique_name(f"{bn.name}/add"), inputs=[
            scaled, gs.Constant(model.unique_name(f"{bn.name}_shift"), (beta - mean * scale).reshape(shape).astype(dtype))],
            outputs=list(bn.outputs))
        bn.outputs.clear()
        bn.inputs.clear()
        model.graph.nodes += [mul, add]
        count += 1
    if count:
        model.cleanup()
    return count


@dataclass
class Rule:
    """A rewrite anchored at nodes of op `op`: `check` returns why it does not apply (None = applies)."""

    name: str
    op: str
    check: Callable[[gs.Graph, gs.Node], str | None]
    rewrite: Callable[[Model, gs.Node], None]


def _check_transpose_pair(graph: gs.Graph, node: gs.Node) -> str | None:
    prev = producer(node.inputs[0])
    if prev is None or prev.op != "Transpose":
        return "input is not a Transpose"
    if "perm" not in node.attrs or "perm" not in prev.attrs:
        return "a Transpose has no explicit perm"
    if sole_consumer(node.inputs[0], graph) is not node:
        return "the first Transpose has other readers"
    return None


def _merge_transposes(model: Model, node: gs.Node) -> None:
    prev = producer(node.inputs[0])
    first, second = list(prev.attrs["perm"]), list(node.attrs["perm"])
    node.attrs["perm"] = [first[p] for p in second]
    node.inputs[0] = prev.inputs[0]


def _check_reshape_pair(graph: gs.Graph, node: gs.Node) -> str | None:
    prev = producer(node.inputs[0])
    if prev is None or prev.op not in ("Reshape", "Flatten", "Squeeze", "Unsqueeze"):
        return "input is not a Reshape/Flatten/Squeeze/Unsqueeze"
    shape = constant_value(node.inputs[1])
    if shape is None:
        return "target shape is not constant"
    if np.any(shape == 0):
        return "target shape copies a dimension (0) from the intermediate tensor"
    if sole_consumer(node.inputs[0], graph) is not node:
        return "the first reshape has other readers"
    return None


def _merge_reshapes(model: Model, node: gs.Node) -> None:
    node.inputs[0] = producer(node.inputs[0]).inputs[0]


def _check_matmul_add(graph: gs.Graph, node: gs.Node) -> str | None:
    a, b = node.inputs
    if a.shape is None or len(a.shape) != 2:
        return "MatMul input is not 2-D"
    weight = constant_value(b)
    if weight is None or weight.ndim != 2:
        return "MatMul weight is not a constant 2-D matrix"
    add = sole_consumer(node.outputs[0], graph)
    if add is None or add.op != "Add":
        return "output is not read only by an Add"
    bias_tensor = add.inputs[1] if add.inputs[0] is node.outputs[0] else add.inputs[0]
    bias = constant_value(bias_tensor)
    if bias is None or bias.dtype != weight.dtype:
        return "Add operand is not a constant of the weight's type"
    if bias.ndim > 2 or (bias.ndim == 2 and bias.shape[0] != 1) or bias.size not in (1, weight.shape[1]):
        return f"bias of shape {list(bias.shape)} does not broadcast along the output features only"
    return None


def _matmul_add_to_gemm(model: Model, node: gs.Node) -> None:
    add = node.outputs[0].outputs[0]
    bias_tensor = add.inputs[1] if add.inputs[0] is node.outputs[0] else add.inputs[0]
    bias = np.broadcast_to(constant_value(bias_tensor).reshape(-1), (constant_value(node.inputs[1]).shape[1],))
    gemm = gs.Node("Gemm", model.unique_name(f"{node.name}/gemm"),
                   inputs=[node.inputs[0], node.inputs[1], gs.Constant(model.unique_name(f"{node.name}_bias"),
                                                                         np.ascontiguousarray(bias))],
                   outputs=[add.outputs[0]])
    add.outputs.clear()
    node.outputs.clear()
    node.inputs.clear()
    model.graph.nodes.append(gemm)


def _check_reshape_target(graph: gs.Graph, node: gs.Node) -> str | None:
    if len(node.inputs) < 2 or constant_value(node.inputs[1]) is not None:
        return "target shape is already constant"
    if node.attrs.get("allowzero", 0):
        return "allowzero=1: a 0 in the target would mean an empty dim, not a copy"
    if node.inputs[0].shape is None:
        return "data shape unknown"
    dims = _reshape_target_dims(node.inputs[1], node.inputs[0])
    if isinstance(dims, str):
        return dims
    if sum(d == -1 for d in dims) > 1:
        return "more than one -1 in the target"
    return None


def _constant_reshape_target(model: Model, node: gs.Node) -> None:
    dims = _reshape_target_dims(node.inputs[1], node.inputs[0])
    node.inputs[1] = gs.Constant(model.unique_name(f"{node.name}/shape"), np.array(dims, np.int64))


def _reshape_target_dims(target: gs.Tensor, data: gs.Tensor) -> list[int] | str:
    """A dynamic target Concat(Shape(t)[i]..., constants) as constants, with 0 ("copy data's dim at this index")
    where Shape(t)[i] is the same dim as data's at that index; else the reason it cannot be."""
    concat = producer(target)
    if concat is None or concat.op != "Concat":
        return "target is not a Concat"
    dims: list[int] = []
    for part in concat.inputs:
        value = constant_value(part)
        if value is not None:
            dims.extend(int(v) for v in value.reshape(-1))
            continue
        source = _shape_element(part)
        if source is None:
            return f"target part {part.name!r} is neither constant nor Shape(x)[i]"
        tensor, axis = source
        j = len(dims)
        if j >= len(data.shape) or tensor.shape is None or axis >= len(tensor.shape):
            return f"target part {part.name!r} does not line up with the data's dims"
        dim = tensor.shape[axis]
        # one shape-inference run names each unknown dim once, so equal names are the same dim
        if dim != data.shape[j] or not isinstance(dim, (int, str)) or dim == "":
            return f"Shape({tensor.name})[{axis}] is not known to equal the data's dim {j}"
        dims.append(dim if isinstance(dim, int) else 0)
    return dims


def _shape_element(part: gs.Tensor) -> tuple[gs.Tensor, int] | None:
    """(t, i) when `part` is Shape(t)[i] as a 1-element vector: Unsqueeze(Gather(Shape(t), i)) or Gather(Shape(t), [i])."""
    node = producer(part)
    if node is not None and node.op == "Unsqueeze":
        axes = constant_value(node.inputs[1]) if len(node.inputs) > 1 else np.asarray(node.attrs.get("axes", []))
        gather = producer(node.inputs[0])
        if axes is None or list(np.asarray(axes).reshape(-1)) != [0] or gather is None or gather.op != "Gather":
            return None
        index = constant_value(gather.inputs[1])
        if index is None or index.ndim != 0:
            return None
    elif node is not None and node.op == "Gather":
        gather, index = node, constant_value(node.inputs[1])
        if index is None or index.shape != (1,):
            return None
    else:
        return None
    shape = producer(gather.inputs[0])
    if shape is None or shape.op != "Shape" or shape.attrs.get("start", 0) or shape.attrs.get("end") is not None:
        return None
    if gather.attrs.get("axis", 0) != 0 or int(index.reshape(-1)[0]) < 0:
        return None
    return shape.inputs[0], int(index.reshape(-1)[0])


RULES: list[Rule] = [
    Rule("transpose-transpose", "Transpose", _check_transpose_pair, _merge_transposes),
    Rule("reshape-reshape", "Reshape", _check_reshape_pair, _merge_reshapes),
    Rule("matmul-add-gemm", "MatMul", _check_matmul_add, _matmul_add_to_gemm),
    Rule("reshape-target", "Reshape", _check_reshape_target, _constant_reshape_target),
    Rule("layernorm", "Div", check_layernorm, rewrite_layernorm),
    Rule("softmax", "Div", check_softmax, rewrite_softmax),
    Rule("gelu", "Erf", check_gelu, rewrite_gelu),
    Rule("gelu-tanh", "Tanh", check_gelu, rewrite_gelu),
    Rule("squeeze-chain", "Squeeze", check_static_shape_chain, rewrite_static_shape_chain),
    Rule("unsqueeze-chain", "Unsqueeze", check_static_shape_chain, rewrite_static_shape_chain),
    Rule("flatten-chain", "Flatten", check_static_shape_chain, rewrite_static_shape_chain),
    Rule("slice-slice", "Slice", check_slice_pair, rewrite_slice_pair),
]


@register_pass
class Fuse(Pass):
    """Apply the fusion rules (Transpose/Reshape chains, 2-D MatMul+Add into Gemm, dynamic Reshape targets, decomposed LayerNorm/Softmax/GELU) until none fires."""

    name = "fuse"
    kind = "lossless"

    @dataclass
    class Options:
        explain: bool = False  # put each rule's refusal reasons in the report
        rules: tuple[str, ...] = ()  # only these rules (default: all)

        def validate(self):
            unknown = set(self.rules) - {r.name for r in RULES}
            if unknown:
                raise ValueError(f"unknown rule(s) {sorted(unknown)}; known: {[r.name for r in RULES]}")

    def run(self, model: Model, ctx) -> PassResult:
        rules = [r for r in RULES if not self.options.rules or r.name in self.options.rules]
        fired: dict[str, int] = {}
        reasons: dict[str, list[str]] = {}
        progress = True
        while progress:
            progress = False
            for rule in rules:
                for node in [n for n in model.graph.nodes if n.op == rule.op]:
                    if not node.outputs or not node.inputs:
                        continue
                    why = rule.check(model.graph, node)
                    if why is None:
                        rule.rewrite(model, node)
                        fired[rule.name] = fired.get(rule.name, 0) + 1
                        progress = True
                    elif self.options.explain:
                        reasons.setdefault(rule.name, []).append(f"{node.name}: {why}")
            if progress:
                model.cleanup()
        report = {"fired": fired, "not_fired": reasons} if self.options.explain else (fired or None)
        return PassResult(bool(fired), {"fused": sum(fired.values())}, report)


__all__ = ["RULES", "FoldBatchNorm", "Fuse", "Rule"]
