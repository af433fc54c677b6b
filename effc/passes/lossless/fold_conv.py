"""Fold Pad, and Mul/Add by constants, into the neighbouring Conv/Gemm weights, bias and pads."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from effc.ir import Model
from effc.ir.patterns import bypass, constant_value, producer, sole_consumer
from effc.pipeline.pass_base import Pass, PassResult, register_pass


def _channel_vector(value: np.ndarray, out_rank: int, channels: int) -> np.ndarray | None:
    """`value` as one number per output channel when it broadcasts along channels only (axis 1), else None."""
    if value.ndim > out_rank:
        return None
    shape = (1,) * (out_rank - value.ndim) + value.shape
    if shape[0] != 1 or any(d != 1 for d in shape[2:]) or shape[1] not in (1, channels):
        return None
    return np.broadcast_to(value.reshape(-1), (channels,)).astype(np.float64)


@register_pass
class FoldPad(Pass):
    """Fold a constant zero-value Pad of spatial dims into the following Conv's pads."""

    name = "fold-pad"
    kind = "lossless"

    def run(self, model: Model, ctx) -> PassResult:
        folded = 0
        for conv in [n for n in model.graph.nodes if n.op == "Conv"]:
            pad = producer(conv.inputs[0])
            if pad is None or pad.op != "Pad" or sole_consumer(conv.inputs[0], model.graph) is not conv:
                continue
            pads = constant_value(pad.inputs[1]) if len(pad.inputs) > 1 else None
            value = constant_value(pad.inputs[2]) if len(pad.inputs) > 2 and pad.inputs[2].name else np.zeros(1)
            if pads is None or value is None or np.any(value != 0) or pad.attrs.get("mode", "constant") != "constant" \
                    or (len(pad.inputs) > 3 and pad.inputs[3].name) or conv.attrs.get("auto_pad", "NOTSET") != "NOTSET":
                continue
            rank = len(pads) // 2
            begin, end = pads[:rank], pads[rank:]
            if np.any(pads < 0) or np.any(begin[:2]) or np.any(end[:2]):
                continue
            old = list(conv.attrs.get("pads", [0] * (2 * (rank - 2))))
            conv.attrs["pads"] = [int(a + b) for a, b in zip(old, [*begin[2:], *end[2:]])]
            conv.inputs[0] = pad.inputs[0]
            folded += 1
        if folded:
            model.cleanup()
        return PassResult(folded > 0, {"folded": folded})


@register_pass
class FoldScale(Pass):
    """Fold Mul/Add by per-channel (or scalar) constants after a Conv or Gemm into its weights and bias."""

    name = "fold-scale"
    kind = "lossless"

    def run(self, model: Model, ctx) -> PassResult:
        folded = 0
        for node in list(model.graph.nodes):
            if node.op not in ("Mul", "Add") or len(node.inputs) != 2:
                continue
            x, c = node.inputs if constant_value(node.inputs[1]) is not None else node.inputs[::-1]
            layer = producer(x)
            value = constant_value(c)
            if layer is None or value is None or layer.op not in ("Conv", "Gemm") or value.dtype != np.float32 \
                    or sole_consumer(x, model.graph) is not node or x.shape is None:
                continue
            if layer.op == "Gemm" and (layer.attrs.get("transB", 0) != 1 or layer.attrs.get("alpha", 1.0) != 1.0
                                       or layer.attrs.get("beta", 1.0) != 1.0):
                continue
            weight = constant_value(layer.inputs[1])
            bias = constant_value(layer.inputs[2]) if len(layer.inputs) > 2 else np.zeros(weight.shape[0] if weight is not None else 0)
            if weight is None or bias is None:
                continue
            channels = weight.shape[0]
            vector = _channel_vector(value, len(x.shape), channels)
            if vector is None or bias.shape not in ((channels,), ()):
                continue
            bias = np.broadcast_to(bias, (channels,)).astype(np.float64)
            if node.op == "Mul":
                weight = weight.astype(np.float64) * vector.reshape(-1, *([1] * (weight.ndim - 1)))
                bias = bias * vector
                layer.inputs[1] = gs.Constant(model.unique_name(f"{layer.name}_scaled_w"), weight.astype(np.float32))
            else:
                bias = bias + vector
            bias_const = gs.Constant(model.unique_name(f"{layer.name}_folded_b"), bias.astype(np.float32))
            if len(layer.inputs) > 2:
                layer.inputs[2] = bias_const
            else:
                layer.inputs.append(bias_const)
            bypassed = bypass(model.graph, node, x)  # cannot fail: x is a node output read only by `node`
            assert bypassed, node.name
            folded += 1
        if folded:
            model.cleanup()
        return PassResult(folded > 0, {"folded": folded})
