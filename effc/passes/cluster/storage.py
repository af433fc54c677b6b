"""How a clustered weight is stored: a float codebook, a narrow index tensor, and a decoder of standard ops.

Indices are UINT2 (four per byte; needs opset 25 for Cast) when k <= 4, UINT4 (two per byte; opset 21) when
k <= 16, else UINT8. The decoder is
Cast(indices -> int32) [-> Add(per-channel offsets)] -> Gather(codebook): constants only, so ONNX Runtime folds it
once at session start and TVM's importer sees a plain constant once constant subgraphs are folded.
Per-channel codebooks are stored as float16 (Gather -> Cast), or as int8 values and one float scale per channel
(Gather -> Cast -> Mul) when they sit on the int8 grid; with many channels their offsets come from a Range node.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import onnx_graphsurgeon as gs

from effc.errors import EffcError
from effc.ir import Model

UINT4_OPSET = 21  # Cast accepts 4-bit types from opset 21 on
UINT2_OPSET = 25  # and 2-bit types from opset 25 on
RANGE_OFFSETS_FROM = 128  # channels


def index_opset(k: int) -> int | None:
    """The opset whose Cast reads the narrowest index type for k entries (None: 8-bit indices, any opset)."""
    return UINT2_OPSET if k <= 4 else UINT4_OPSET if k <= 16 else None


def index_bits(k: int) -> int:
    """Bits per index in the narrowest type for k entries (the one index_opset(k) reads)."""
    return 2 if k <= 4 else 4 if k <= 16 else 8


def index_dtype(k: int, opset: int) -> np.dtype:
    """The narrowest index type for a codebook of k entries that Cast reads at `opset`."""
    if k <= 4 and opset >= UINT2_OPSET:
        return np.dtype(ml_dtypes.uint2)
    if k <= 16 and opset >= UINT4_OPSET:
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


def channel_codebooks(codebook: np.ndarray, int8_scales: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """How per-channel codebooks [channels, k] are stored: float16 values (relative precision 5e-4: refitted codebooks
    can hold large entries that cancel, which a grid relative to the largest one would break), or, when they were
    snapped to the int8 grid of `int8_scales` [channels], int8 values and those scales (exact)."""
    if int8_scales is None:
        return codebook.astype(np.float16), None
    scales = np.asarray(int8_scales, np.float32)
    return np.clip(np.round(codebook / scales[:, None]), -127, 127).astype(np.int8), scales


def write_decoder(model: Model, name: str, codebook: np.ndarray, indices: np.ndarray, axis: int, dtype: np.dtype,
                  scales: np.ndarray | None = None) -> gs.Variable:
    """Add constants and decoder nodes computing the weight `name` from its codebook; returns the decoded tensor.

    codebook is [k] float32 (one per tensor) or [channels, k] (one per output channel along `axis` of indices) of
    float16, or int8 with `scales` [channels] (the codebook of channel c is codebook[c] * scales[c]).
    """
    base = f"{name}/cluster"
    k = codebook.shape[-1]
    book = gs.Constant(model.unique_name(f"{base}/codebook"), np.ascontiguousarray(codebook).reshape(-1))
    packed = gs.Constant(model.unique_name(f"{base}/indices"), np.ascontiguousarray(indices).astype(dtype))
    wide = gs.Variable(model.unique_name(f"{base}/indices_i32"), dtype=np.int32, shape=list(indices.shape))
    nodes = [gs.Node("Cast", model.unique_name(f"{base}/Cast"), {"to": onnx.TensorProto.INT32}, [packed], [wide])]
    shape = [1] * indices.ndim
    shape[axis] = -1
    if codebook.ndim == 2:  # per-channel codebooks are concatenated: entry j of channel c is at c*k + j
        offsets, offset_nodes = _channel_offsets(model, base, len(codebook), k, shape)
        nodes += offset_nodes
        shifted = gs.Variable(model.unique_name(f"{base}/indices_flat"), dtype=np.int32, shape=list(indices.shape))
        nodes.append(gs.Node("Add", model.unique_name(f"{base}/Add"), inputs=[wide, offsets], outputs=[shifted]))
        wide = shifted
    decoded = gs.Variable(model.unique_name(f"{base}/decoded"), dtype=np.float32, shape=list(indices.shape))
    if codebook.dtype == np.float32:
        nodes.append(gs.Node("Gather", model.unique_name(f"{base}/Gather"), {"axis": 0}, [book, wide], [decoded]))
    else:  # Gather -> Cast to float [-> Mul(scales)]
        picked = gs.Variable(model.unique_name(f"{base}/picked"), dtype=codebook.dtype, shape=list(indices.shape))
        nodes.append(gs.Node("Gather", model.unique_name(f"{base}/Gather"), {"axis": 0}, [book, wide], [picked]))
        widened = decoded if scales is None else gs.Variable(model.unique_name(f"{base}/picked_f32"), dtype=np.float32,
                                                             shape=list(indices.shape))
        nodes.append(gs.Node("Cast", model.unique_name(f"{base}/CastBook"), {"to": onnx.TensorProto.FLOAT}, [picked], [widened]))
        if scales is not None:
            scale = gs.Constant(model.unique_name(f"{base}/scales"), np.asarray(scales, np.float32).reshape(shape))
            nodes.append(gs.Node("Mul", model.unique_name(f"{base}/Scale"), inputs=[widened, scale], outputs=[decoded]))
    model.graph.nodes.extend(nodes)
    return decoded


def _channel_offsets(model: Model, base: str, channels: int, k: int, shape: list[int]) -> tuple[gs.Tensor, list[gs.Node]]:
    """c * k for each channel c, shaped to broadcast along the channel axis: a stored int32 tensor, or for many
    channels (where 4 bytes each outweigh two more nodes and four small constants, about 500 bytes) Range -> Reshape
    (opset >= 11)."""
    if model.opset < 11 or channels < RANGE_OFFSETS_FROM:
        return gs.Constant(model.unique_name(f"{base}/offsets"), (np.arange(channels, dtype=np.int32) * k).reshape(shape)), []
    scalars = [gs.Constant(model.unique_name(f"{base}/{what}"), np.array(v, np.int32))
               for what, v in (("offset_start", 0), ("offset_limit", channels * k), ("offset_step", k))]
    flat = gs.Variable(model.unique_name(f"{base}/offsets_flat"), dtype=np.int32, shape=[channels])
    offsets = gs.Variable(model.unique_name(f"{base}/offsets"), dtype=np.int32, shape=[1 if d == 1 else channels for d in shape])
    target = gs.Constant(model.unique_name(f"{base}/offsets_shape"), np.array(shape, np.int64))
    return offsets, [gs.Node("Range", model.unique_name(f"{base}/Range"), inputs=scalars, outputs=[flat]),
                     gs.Node("Reshape", model.unique_name(f"{base}/ReshapeOffsets"), inputs=[flat, target], outputs=[offsets])]


def decode_weights(model: Model) -> Model:
    """A copy of `model` with every cluster decoder replaced by its float weight, computed in numpy (the float rebuild)."""
    out = model.copy()
    for node in [n for n in out.graph.nodes if n.op == "Gather" and n.name.endswith("/Gather") and "/cluster/" in n.name]:
        book, flat = node.inputs
        index_node = flat.inputs[0]
        if index_node.op == "Add":
            cast, offsets = index_node.inputs[0].inputs[0], _constant_value(index_node.inputs[1])
        else:
            cast, offsets = index_node, 0
        indices = cast.inputs[0].values.astype(np.int64) + offsets
        values = book.values[indices].astype(np.float32)
        decoded = node.outputs[0]
        if book.values.dtype != np.float32:  # per-channel codebooks: Gather -> Cast [-> Mul(scales)]
            decoded = decoded.outputs[0].outputs[0]
            if decoded.outputs and decoded.outputs[0].op == "Mul":
                values = values * decoded.outputs[0].inputs[1].values
                decoded = decoded.outputs[0].outputs[0]
        weight = gs.Constant(out.unique_name(decoded.name + "/float"), values.astype(np.float32))
        for consumer in list(decoded.outputs):
            consumer.inputs[next(i for i, t in enumerate(consumer.inputs) if t is decoded)] = weight
    return out.cleanup()


def _constant_value(tensor: gs.Tensor) -> np.ndarray:
    """A stored offsets tensor's values, or those its Range -> Reshape computes."""
    if isinstance(tensor, gs.Constant):
        return tensor.values
    reshape = tensor.inputs[0]
    start, limit, step = (int(t.values) for t in reshape.inputs[0].inputs[0].inputs)
    return np.arange(start, limit, step, dtype=np.int64).reshape(reshape.inputs[1].values)
