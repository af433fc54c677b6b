"""A layer's inputs as its weight sees them, taken from a model run on ONNX Runtime with inner tensors exposed.

`intermediate_session` runs a model with chosen inner tensors as extra outputs; `conv_patches` turns sampled output
positions of a 2-D Conv into im2col rows, `sample_input_rows` samples the rows of any Conv/Gemm/MatMul input.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
from numpy.lib.stride_tricks import sliding_window_view

from effc.ir import Model
from effc.onnx_runtime import ort_session


def conv_patches(x: np.ndarray, kernel: Sequence[int], strides: Sequence[int], pads: Sequence[int],
                 dilations: Sequence[int], positions: np.ndarray) -> np.ndarray:
    """im2col rows of a 2-D Conv input `x` [N, C, H, W] at output `positions` [(n, oh, ow)], shape [P, C*kh*kw]."""
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    span = [d * (k - 1) + 1 for k, d in zip(kernel, dilations)]
    # a view [N, C, H', W', kh, kw] of every window: one gather at the positions copies just their patches
    windows = sliding_window_view(xp, span, axis=(2, 3))[..., ::dilations[0], ::dilations[1]]
    n, oh, ow = positions[:, 0], positions[:, 1], positions[:, 2]
    return windows[n, :, oh * strides[0], ow * strides[1]].reshape(len(positions), -1)


def sample_positions(shape: Sequence[int], count: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `count` distinct (n, h, w) positions of an output of `shape` [N, C, H, W], sampled uniformly."""
    n, _, h, w = shape
    total = n * h * w
    flat = rng.choice(total, size=min(count, total), replace=False)
    return np.stack(np.unravel_index(flat, (n, h, w)), axis=1)


def sample_input_rows(node: gs.Node, x: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `count` rows of a layer's input `x` as its weight sees them: im2col patches at sampled output positions
    of a 2-D Conv, else sampled rows of the (flattened) input of a Gemm/MatMul."""
    if node.op == "Conv":
        kernel, strides, pads, dilations = conv_geometry(node)
        out_h = (x.shape[2] + pads[0] + pads[2] - dilations[0] * (kernel[0] - 1) - 1) // strides[0] + 1
        out_w = (x.shape[3] + pads[1] + pads[3] - dilations[1] * (kernel[1] - 1) - 1) // strides[1] + 1
        positions = sample_positions((x.shape[0], 0, out_h, out_w), count, rng)
        return conv_patches(x, kernel, strides, pads, dilations, positions)
    flat = x.reshape(-1, x.shape[-1])
    return flat[rng.choice(len(flat), size=min(count, len(flat)), replace=False)]


def intermediate_session(model: Model, names: Sequence[str]) -> ort.InferenceSession:
    """An ORT session of `model` that also returns the inner tensors `names` (after its own outputs)."""
    proto = model.to_proto(portable=True)
    present = {o.name for o in proto.graph.output}
    tensors = model.graph.tensors()
    for name in names:
        if name not in present:
            dtype = getattr(tensors.get(name), "dtype", None)
            elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype)) if dtype is not None else onnx.TensorProto.FLOAT
            proto.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
            present.add(name)
    return ort_session(proto)


def conv_geometry(node: gs.Node) -> tuple[list[int], list[int], list[int], list[int]] | None:
    """(kernel, strides, pads, dilations) of a 2-D Conv with explicit padding, or None if not that."""
    weight = node.inputs[1]
    if len(weight.shape) != 4 or node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        return None
    kernel = list(weight.shape[2:])
    strides = list(node.attrs.get("strides", [1, 1]))
    pads = list(node.attrs.get("pads", [0, 0, 0, 0]))
    dilations = list(node.attrs.get("dilations", [1, 1]))
    return kernel, strides, pads, dilations
