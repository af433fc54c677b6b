"""Facts about a layer's weight that several pass families read: which axis indexes its output channels, and the
metadata key under which an earlier pass leaves per-channel int8 scales for the int8 pass (cluster snaps its
codebooks to the int8 grid and records the scales it used)."""

from __future__ import annotations

import onnx_graphsurgeon as gs

WEIGHT_SCALE_KEY = "effc.int8_weight_scale."  # + weight tensor name: per-output-channel scales chosen upstream


def int8_weight_qmax(isa) -> int:
    """The largest int8 weight magnitude for kernels of `isa`: 127, or 63 where uint8 x int8 products saturate
    in 16 bits (x86 without VNNI: pmaddubsw adds two products of up to 255 x 127 into an int16)."""
    return 2 ** (isa.int8_weight_bits - 1) - 1


def output_axis(node: gs.Node) -> int:
    """The axis of a Conv/ConvTranspose/Gemm/MatMul weight that indexes the layer's output channels."""
    if node.op == "Conv":
        return 0
    if node.op == "Gemm":
        return 0 if node.attrs.get("transB", 0) else 1
    return 1
