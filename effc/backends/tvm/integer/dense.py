"""int8 matmuls over constant weights (quantized Gemm/MatMul) on the dot-product instructions of dot.py.

The integer rewrite (rewrite.py) emits `matmul(xq, Wq, out_dtype=int32)` with Wq a constant [K, N]. Here each such
call whose activations have the signedness of one of the target's dot instructions becomes a TE kernel over the
weight packed at compile time as [N/lanes, K/4, lanes, 4]: one 16-byte (sdot) or 64-byte (vpdpbusd) load holds the
weights of `lanes` outputs x 4 inputs, multiplied by 4 activations broadcast, so the accumulation step is the same
tensor intrinsic as the convolutions' (dot.register_intrinsic). Activation rows whose K is no multiple of 4 are
padded with zeros (their weights are zero too); outputs past N are computed on zero weights and dropped. The int32
result is unpacked to [..., N], where the rewrite's requantization is fused (rules.py: `int8-dot-matmul`).
"""

from __future__ import annotations

import functools

import numpy as np

from effc.backends.tvm.integer import dot

PACK_DATA_BLOCK = "effc_dense_pack_data"
DENSE_BLOCK = "effc_dense_dot_"  # + the instruction's key
UNPACK_BLOCK = "effc_dense_unpack"


def pack_weight(weight: np.ndarray, lanes: int) -> np.ndarray:
    """[K, N] int8 -> [ceil(N/lanes), ceil(K/4), lanes, 4], entries past K and N zero."""
    k_len, n = weight.shape
    out_blocks, blocks = -(-n // lanes), -(-k_len // dot.IN_BLOCK)
    padded = np.zeros((blocks * dot.IN_BLOCK, out_blocks * lanes), np.int8)
    padded[:k_len, :n] = weight
    packed = padded.reshape(blocks, dot.IN_BLOCK, out_blocks, lanes)
    return np.ascontiguousarray(packed.transpose(2, 0, 3, 1))


def dense(data, packed, out_features: int, key: str):
    """uint8/int8 `data` [..., K] x packed int8 weights -> [..., out_features] int32, its product block named for
    instruction `key`."""
    from tvm import te, tirx

    *lead, k_len = (int(d) for d in data.shape)
    out_blocks, blocks, lanes, in_block = (int(d) for d in packed.shape)
    source = data
    if blocks * in_block != k_len:
        source = te.compute((*lead, blocks * in_block), lambda *i: tirx.if_then_else(
            i[-1] < k_len, data[(*i[:-1], tirx.min(i[-1], k_len - 1))], tirx.const(0, data.dtype)), name=PACK_DATA_BLOCK)
    rk, ri = te.reduce_axis((0, blocks), "rk"), te.reduce_axis((0, in_block), "ri")
    acc = te.compute(
        (*lead, out_blocks, lanes),
        lambda *i: te.sum(source[(*i[:-2], rk * in_block + ri)].astype("int32")
                          * packed[i[-2], rk, i[-1], ri].astype("int32"), axis=[rk, ri]),
        name=DENSE_BLOCK + key)
    return te.compute((*lead, out_features), lambda *i: acc[(*i[:-1], i[-1] // lanes, i[-1] % lanes)],
                      name=UNPACK_BLOCK)


def fits(inst: dot.DotInstruction, data_dtype: str, weight: np.ndarray) -> bool:
    """Whether `inst` computes this matmul exactly: activations of its signedness, one pixel per instruction, weights
    small enough for its intermediate sums."""
    if data_dtype != inst.data_dtype or inst.pixels != 1 or inst.in_block != dot.IN_BLOCK:
        return False
    return inst.max_weight is None or int(np.abs(weight.astype(np.int32)).max(initial=0)) <= inst.max_weight


def rewrite_matmuls(mod, instructions) -> object:
    """`mod` with each int8-constant matmul of `main` (uint8/int8 activations, int32 out) through the first of
    `instructions` (dot.DotInstruction, best first) that fits it; the others stay Relax matmuls."""
    from effc.backends.tvm.mcu.relax_calls import replace_calls

    return replace_calls(mod, "relax.matmul", functools.partial(_dense_call, list(instructions)))


def _dense_call(instructions, builder, call):
    import tvm
    from tvm import relax

    data, weight = call.args
    if not isinstance(weight, tvm.ir.GenericConst) or str(call.attrs.out_dtype) != "int32":
        return None
    w = weight.value.numpy()
    if w.dtype != np.int8 or w.ndim != 2 or getattr(data.ty, "ndim", 0) < 2:
        return None
    inst = next((i for i in instructions if fits(i, str(data.ty.dtype), w)), None)
    if inst is None:
        return None
    return builder.call_te(dense, data, relax.const(pack_weight(w, inst.lanes)), w.shape[1], inst.key,
                           primfunc_name_hint="effc_matmul_int8")
