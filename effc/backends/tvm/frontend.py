"""TVM's ONNX frontend, and what must hold before it runs: constants folded, every op importable, every dim pinned."""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import onnx_graphsurgeon as gs

from effc.errors import EffcError
from effc.ir import Model
from effc.ir.structure import nodes_with_subgraphs


@functools.cache
def tvm_importable_ops() -> frozenset[str]:
    from tvm.relax.frontend.onnx import onnx_frontend

    # "If" is converted by the graph importer itself, not through the converter table.
    return frozenset(onnx_frontend._get_convert_map()) | {"If"}


def unsupported_nodes(model: Model) -> list[tuple[str, str]]:
    """(node name, op) of every node the TVM ONNX frontend cannot convert, inside If/Loop/Scan bodies too."""
    ops = tvm_importable_ops()
    return [(n.name, n.op if not n.domain or n.domain == "ai.onnx" else f"{n.domain}.{n.op}")
            for n in nodes_with_subgraphs(model.graph)
            if n.op not in ops or (n.domain not in ("", "ai.onnx", None))]


def fold_constants(model: Model, *, dequantize_weights: bool = True) -> Model:
    """A copy of `model` with every constant subgraph folded: compressed weights decoded, constant QDQ weights
    dequantized unless `dequantize_weights` is False (a lowering with an integer rewrite, effc.backends.tvm.integer,
    reads them as int8), shape arithmetic evaluated."""
    folded = model.copy()
    if dequantize_weights:
        _dequantize_constant_weights(folded)
    folded.graph.fold_constants(size_threshold=None)
    folded.cleanup()
    _imports_well(folded)
    return folded


def _imports_well(model: Model) -> None:
    """Rewrite what TVM's ONNX frontend imports in a form its layout conversion cannot carry (cpu_layout): a
    BatchNormalization whose conv weight only became constant here (weights built by ConstantOfShape, as in the onnx
    package's light models) is folded into the conv, and Sum of n tensors becomes n-1 Adds (the frontend stacks
    them into a rank-5 tensor, which stops the blocked layout at every residual Sum)."""
    from effc.passes.lossless.fusion import FoldBatchNorm

    FoldBatchNorm().run(model, None)
    sums = [n for n in model.graph.nodes if n.op == "Sum" and len(n.inputs) != 1]
    for node in sums:
        total = node.inputs[0]
        for i, term in enumerate(node.inputs[1:], start=1):
            last = i == len(node.inputs) - 1
            out = node.outputs[0] if last else gs.Variable(model.unique_name(f"{node.name}/partial{i}"), total.dtype)
            model.graph.nodes.append(gs.Node("Add", model.unique_name(f"{node.name}/add{i}"), inputs=[total, term],
                                             outputs=[out]))
            total = out
        node.outputs.clear()
    if sums:
        model.cleanup()


@contextlib.contextmanager
def elementwise_clip():
    """Within it, TVM's ONNX frontend imports Clip as Relax's elementwise maximum and minimum. Its own converter
    writes Clip as an opaque TIR call, which TVM's layout conversion cannot see through: every Clip would convert
    blocked activations (cpu_layout) back to NCHW and again."""
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend as frontend

    class ElementwiseClip(frontend.Clip):
        @classmethod
        def _impl_v13(cls, bb, inputs, attr, params):
            result = inputs[0]
            for bound, op, for_min in ((inputs[1], relax.op.maximum, True), (inputs[2], relax.op.minimum, False)):
                if bound is not None:
                    result = bb.normalize(op(result, cls._sanitize_nan_clip_bound(bb, bound, for_min=for_min)))
            return result

    stock = frontend._get_convert_map
    frontend._get_convert_map = lambda: {**stock(), "Clip": ElementwiseClip}
    try:
        yield
    finally:
        frontend._get_convert_map = stock


def _dequantize_constant_weights(model: Model) -> None:
    """Replace DequantizeLinear of constant int8 weights by float constants (graphsurgeon never folds Q/DQ)."""
    for node in [n for n in model.graph.nodes if n.op == "DequantizeLinear"]:
        if not all(isinstance(t, gs.Constant) for t in node.inputs if t.name):
            continue
        x, scale = node.inputs[0].values, node.inputs[1].values
        zero = node.inputs[2].values if len(node.inputs) > 2 and node.inputs[2].name else np.zeros((), x.dtype)
        shape = [1] * x.ndim
        if scale.ndim == 1 and scale.size > 1:
            shape[node.attrs.get("axis", 1) % x.ndim] = scale.size
        value = (x.astype(np.float32) - zero.astype(np.float32).reshape(shape if zero.size > 1 else ())) * scale.reshape(shape if scale.size > 1 else ())
        out = node.outputs[0]
        constant = gs.Constant(model.unique_name(f"{out.name}/dequantized"), np.ascontiguousarray(value.astype(scale.dtype)))
        for consumer in list(out.outputs):
            for i, t in enumerate(consumer.inputs):
                if t is out:
                    consumer.inputs[i] = constant
        model.graph.outputs = [constant if t is out else t for t in model.graph.outputs]
        node.outputs.clear()


def check_lowerable(model: Model) -> None:
    """Raise EffcError naming every node TVM cannot import, or every input with a dynamic dim."""
    bad = unsupported_nodes(model)
    if bad:
        listed = ", ".join(f"{name} ({op})" for name, op in bad[:8])
        more = f" and {len(bad) - 8} more" if len(bad) > 8 else ""
        raise EffcError(f"TVM cannot import {len(bad)} node(s): {listed}{more}; remove them or use --target ort")
    dynamic = [spec for spec in model.input_specs() if not spec.is_static]
    if dynamic:
        spec = dynamic[0]
        dims = ",".join(str(d) for d in spec.shape or ["?"])
        raise EffcError(f"input {spec.name!r} has dynamic shape [{dims}]: pin it with --input-shape "
                        f"{spec.name}=" + ",".join(str(d) if isinstance(d, int) else "1" for d in spec.shape or [1]))


def import_relax(model: Model):
    """(IRModule, params) of `model` (constants already folded): the ONNX frontend with parameters kept as inputs,
    then detached. What compile builds and what `effc tune` extracts its tasks from. EffcError for unimportable ops,
    dynamic dims or a frontend failure."""
    from tvm.relax.frontend import detach_params
    from tvm.relax.frontend.onnx import from_onnx

    check_lowerable(model)
    shapes = {spec.name: list(spec.shape) for spec in model.input_specs()}
    try:
        with elementwise_clip():
            mod = from_onnx(model.to_proto(), shape_dict=shapes, keep_params_in_input=True)
    except Exception as exc:  # the frontend raises bare Python errors for attributes it does not support
        raise EffcError(f"TVM's ONNX frontend failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    return detach_params(mod)
