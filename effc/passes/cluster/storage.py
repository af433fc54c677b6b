"""How a clustered weight is stored: a float codebook, a narrow index tensor, and a decoder of standard ops.

Indices are UINT4 (two per byte; needs opset 21 for Cast) when k <= 16, else UINT8. The decoder is
Cast(indices -> int32) [-> Add(per-channel offsets)] -> Gather(codebook): constants only, so ONNX Runtime folds it
once at session start and TVM's importer sees a plain constant once constant subgraphs are folded.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import onnx_graphsurgeon as gs

from effc.errors import EffcError
from effc.ir import Model

UINT4_OPSET = 21  # Cast accepts 4-bit types from opset 21 on


def index_dtype(k: int, allow_4bit: bool) -> np.dtype:
    """The narrowest index type for a codebook of k entries."""
    if k <= 16 and allow_4bit:
        return np.dtype(ml_dtypes.uint4)
    if k <= 256:
        return np.dtype(np.uint8)
    raise EffcError(f"a codebook of {k} entries does not fit 8-bit indices (k <= 256)")


def raise_opset(model: Model, opset: int = UINT4_OPSET) -> bool:
    """Convert the whole model to `opset` (ONNX version converter) in place; False when it is already there."""
    if model.opset >= opset:
        return False
    converted = onnx.version_converter.convert_version(model.to_proto(), opset)
    model.graph = Model.from_proto(converted).graph
    return True


def write_decoder(model: Model, name: str, codebook: np.ndarray, indices: np.ndarray, axis: int, dtype: np.dtype) -> gs.Variable:
    """Add constants and decoder nodes computing the weight `name` from its codebook; returns the decoded tensor.

    codebook is [k] (one per tensor) or [channels, k] (one per output channel along `axis` of indices).
    """
    base = f"{name}/cluster"
    k = codebook.shape[-1]
    book = gs.Constant(model.unique_name(f"{base}/codebook"), np.ascontiguousarray(codebook, np.float32).reshape(-1))
    packed = gs.Constant(model.unique_name(f"{base}/indices"), np.ascontiguousarray(indices).astype(dtype))
    wide = gs.Variable(model.unique_name(f"{base}/indices_i32"), dtype=np.int32, shape=list(indices.shape))
    nodes = [gs.Node("Cast", model.unique_name(f"{base}/Cast"), {"to": onnx.TensorProto.INT32}, [packed], [wide])]
    if codebook.ndim == 2:  # per-channel codebooks are concatenated: entry j of channel c is at c*k + j
        shape = [1] * indices.ndim
        shape[axis] = -1
        offsets = gs.Constant(model.unique_name(f"{base}/offsets"), (np.arange(len(codebook), dtype=np.int32) * k).reshape(shape))
        shifted = gs.Variable(model.unique_name(f"{base}/indices_flat"), dtype=np.int32, shape=list(indices.shape))
        nodes.append(gs.Node("Add", model.unique_name(f"{base}/Add"), inputs=[wide, offsets], outputs=[shifted]))
        wide = shifted
    decoded = gs.Variable(model.unique_name(f"{base}/decoded"), dtype=np.float32, shape=list(indices.shape))
    nodes.append(gs.Node("Gather", model.unique_name(f"{base}/Gather"), {"axis": 0}, [book, wide], [decoded]))
    model.graph.nodes.extend(nodes)
    return decoded


def decode_weights(model: Model) -> Model:
    """A copy of `model` with every cluster decoder replaced by its float weight, computed in numpy (the float rebuild)."""
    out = model.copy()
    for node in [n for n in out.graph.nodes if n.op == "Gather" and n.name.endswith("/Gather") and "/cluster/" in n.name]:
        book, flat = node.inputs
        index_node = flat.inputs[0]
        if index_node.op == "Add":
            cast, offsets = index_node.inputs[0].inputs[0], index_node.inputs[1].values
        else:
            cast, offsets = index_node, 0
        indices = cast.inputs[0].values.astype(np.int64) + offsets
        weight = gs.Constant(out.unique_name(node.outputs[0].name + "/float"), book.values[indices].astype(np.float32))
        decoded = node.outputs[0]
        for consumer in list(decoded.outputs):
            consumer.inputs[next(i for i, t in enumerate(consumer.inputs) if t is decoded)] = weight
    return out.cleanup()
