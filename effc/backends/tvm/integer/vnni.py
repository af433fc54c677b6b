"""uint8 x int8 -> int32 convolutions with AVX-512 VNNI (`vpdpbusd`): TE compute, weight packing, schedule rule.

`vpdpbusd` multiplies 4 uint8 activations (one 32-bit lane, broadcast) by 16 x 4 int8 weights and adds each group
of 4 into one of 16 int32 accumulators. So the kernel reads its input as [N, C/4, H, W, 4] (packed inside the
kernel from NCHW, spatially padded with the zero point, channels padded to a multiple of 4 whose weights are zero)
and its weights as [O/16, C/4, KH, KW, 16, 4] (packed at compile time), accumulates [N, O/16, OH, OW, 16] in registers (a row tile of output pixels x 16 channels) and
writes NCHW back through the fused requantization.

TVM 0.27's own `dot_16x4_vnni` intrinsic does not build with its bundled LLVM 22 (it passes <16 x i32> operands
where `llvm.x86.avx512.vpdpbusd.512` takes <64 x i8>; see NOTES): `effc_dot_16x4_vnni` is the same description with
the operands reinterpreted as u8x64 and i8x64.
"""

from __future__ import annotations

import functools

import numpy as np

PACK_DATA_BLOCK = "effc_int8_pack_data"
CONV_BLOCK = "effc_conv2d_u8s8_vnni"
UNPACK_BLOCK = "effc_int8_unpack"
INTRIN = "effc_dot_16x4_vnni"
OUT_BLOCK, IN_BLOCK = 16, 4  # output channels per vector, input channels per 32-bit lane
MAX_ROW_TILE = 14  # output pixels per register tile (accumulators: one zmm each)


@functools.cache
def register_intrinsic() -> str:
    """Registers `effc_dot_16x4_vnni` (once per process; a tuning worker needs it too) and returns its name.
    (Importing tvm.s_tir.tensor_intrin would parse every target's intrinsics: about 25 s.)"""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(a: T.Buffer((4,), "uint8", offset_factor=1), b: T.Buffer((16, 4), "int8", offset_factor=1),
             c: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:16], a[0:4], b[0:16, 0:4])
            T.writes(c[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        c[vi] = c[vi] + T.cast(a[vk], "int32") * T.cast(b[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def vnni(a: T.Buffer((4,), "uint8", offset_factor=1), b: T.Buffer((16, 4), "int8", offset_factor=1),
             c: T.Buffer((16,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:16], a[0:4], b[0:16, 0:4])
            T.writes(c[0:16])
            a_u8x64 = T.reinterpret(T.broadcast(T.reinterpret(a.vload([0], "uint8x4"), dtype="int32"), 16), dtype="uint8x64")
            c[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"), c.vload([0], dtype="int32x16"),
                a_u8x64, b.vload([0, 0], dtype="int8x64"), dtype="int32x16")

    TensorIntrin.register(INTRIN, desc, vnni, override=True)
    return INTRIN


def pack_weight(weight: np.ndarray) -> np.ndarray:
    """[O, C, KH, KW] int8 -> [O/16, ceil(C/4), KH, KW, 16, 4], channels past C zero."""
    out_channels, channels, kh, kw = weight.shape
    blocks = -(-channels // IN_BLOCK)
    padded = np.zeros((out_channels, blocks * IN_BLOCK, kh, kw), np.int8)
    padded[:, :channels] = weight
    packed = padded.reshape(out_channels // OUT_BLOCK, OUT_BLOCK, blocks, IN_BLOCK, kh, kw)
    return np.ascontiguousarray(packed.transpose(0, 2, 4, 5, 1, 3))


def conv2d(data, packed, padding, pad_value: int, strides, dilation, out_channels: int):
    """NCHW uint8 `data`, padded here with `pad_value` (the zero point), x packed int8 weights -> NCHW int32."""
    from tvm import te, tirx

    n, channels, height, width = (int(d) for d in data.shape)
    out_blocks, blocks, kh, kw = (int(d) for d in packed.shape[:4])
    top, left, bottom, right = padding
    (sh, sw), (dh, dw) = strides, dilation
    height_p, width_p = height + top + bottom, width + left + right
    out_h, out_w = (height_p - (kh - 1) * dh - 1) // sh + 1, (width_p - (kw - 1) * dw - 1) // sw + 1

    def lane(b, c, y, x, i):
        ch = c * IN_BLOCK + i
        inside = tirx.all(ch < channels, y >= top, y < height + top, x >= left, x < width + left)
        value = data[b, tirx.min(ch, channels - 1), tirx.max(tirx.min(y - top, height - 1), 0),
                     tirx.max(tirx.min(x - left, width - 1), 0)]
        return tirx.if_then_else(inside, value, tirx.const(pad_value, "uint8"))

    packed_data = te.compute((n, blocks, height_p, width_p, IN_BLOCK), lane, name=PACK_DATA_BLOCK)
    rc, ry, rx, ri = (te.reduce_axis((0, e), name) for e, name in ((blocks, "rc"), (kh, "ry"), (kw, "rx"), (IN_BLOCK, "ri")))
    acc = te.compute(
        (n, out_blocks, out_h, out_w, OUT_BLOCK),
        lambda b, ob, y, x, oi: te.sum(
            packed_data[b, rc, y * sh + ry * dh, x * sw + rx * dw, ri].astype("int32")
            * packed[ob, rc, ry, rx, oi, ri].astype("int32"), axis=[rc, ry, rx, ri]),
        name=CONV_BLOCK)
    return te.compute((n, out_channels, out_h, out_w),
                      lambda b, o, y, x: acc[b, o // OUT_BLOCK, y, x, o % OUT_BLOCK], name=UNPACK_BLOCK)


def conv_kernel(builder, xq, weight: np.ndarray, attrs, zero_point: int):
    """The integer rewrite's hook (rewrite.ConvKernel): the int32 NCHW conv2d of uint8 `xq` by int8 `weight`
    through this kernel, padded with `zero_point`; None where it does not apply (signed activations, grouped
    convs, output channels no multiple of 16)."""
    from tvm import relax

    if str(xq.ty.dtype) != "uint8" or int(attrs.groups) != 1 or weight.shape[0] % OUT_BLOCK:
        return None
    if attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW":
        return None
    padding = [int(p) for p in attrs.padding]
    padding = padding * 2 if len(padding) == 2 else padding
    return builder.call_te(conv2d, xq, relax.const(pack_weight(weight)), padding, zero_point,
                           [int(s) for s in attrs.strides], [int(d) for d in attrs.dilation], weight.shape[0],
                           primfunc_name_hint="effc_conv2d_int8")
