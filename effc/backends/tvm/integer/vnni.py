"""uint8 x int8 -> int32 convolutions with AVX-512 VNNI (`vpdpbusd`): TE compute, weight packing, schedule rule.

`vpdpbusd` multiplies 4 uint8 activations (one 32-bit lane, broadcast) by 16 x 4 int8 weights and adds each group
of 4 into one of 16 int32 accumulators. So the kernel reads its input as [N, C/4, H, W, 4] (packed inside the
kernel from NCHW, channels padded to a multiple of 4 with zeros whose weights are zero too) and its weights as
[O/16, C/4, KH, KW, 16, 4] (packed by a separate function on the weights alone, which LiftTransformParams moves
to compile time), accumulates [N, O/16, OH, OW, 16] in registers (a row tile of output pixels x 16 channels) and
writes NCHW back through the fused requantization.

TVM 0.27's own `dot_16x4_vnni` intrinsic does not build with its bundled LLVM 22 (it passes <16 x i32> operands
where `llvm.x86.avx512.vpdpbusd.512` takes <64 x i8>; see NOTES): `effc_dot_16x4_vnni` is the same description with
the operands reinterpreted as u8x64 and i8x64.
"""

from __future__ import annotations

import functools

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


def supported(data_dtype: str, weight_dtype: str, out_dtype: str, groups: int, out_channels: int) -> bool:
    return (data_dtype == "uint8" and weight_dtype == "int8" and out_dtype == "int32" and groups == 1
            and out_channels % OUT_BLOCK == 0)


def pack_weight(weight):
    """[O, C, KH, KW] int8 -> [O/16, ceil(C/4), KH, KW, 16, 4], channels past C zero."""
    from tvm import te, tirx

    out_channels, channels, kh, kw = (int(d) for d in weight.shape)
    blocks = -(-channels // IN_BLOCK)

    def value(ob, cb, y, x, oi, ci):
        c = cb * IN_BLOCK + ci
        return tirx.if_then_else(c < channels, weight[ob * OUT_BLOCK + oi, tirx.min(c, channels - 1), y, x],
                                 tirx.const(0, "int8"))

    return te.compute((out_channels // OUT_BLOCK, blocks, kh, kw, OUT_BLOCK, IN_BLOCK), value, name="effc_int8_pack_weight")


def conv2d(data, packed, strides, dilation, out_channels: int):
    """NCHW uint8 `data` (already padded) x packed int8 weights -> NCHW int32."""
    from tvm import te, tirx

    n, channels, height, width = (int(d) for d in data.shape)
    out_blocks, blocks, kh, kw = (int(d) for d in packed.shape[:4])
    (sh, sw), (dh, dw) = strides, dilation
    out_h, out_w = (height - (kh - 1) * dh - 1) // sh + 1, (width - (kw - 1) * dw - 1) // sw + 1

    def lane(b, c, y, x, i):
        ch = c * IN_BLOCK + i
        return tirx.if_then_else(ch < channels, data[b, tirx.min(ch, channels - 1), y, x], tirx.const(0, "uint8"))

    packed_data = te.compute((n, blocks, height, width, IN_BLOCK), lane, name=PACK_DATA_BLOCK)
    rc, ry, rx, ri = (te.reduce_axis((0, e), name) for e, name in ((blocks, "rc"), (kh, "ry"), (kw, "rx"), (IN_BLOCK, "ri")))
    acc = te.compute(
        (n, out_blocks, out_h, out_w, OUT_BLOCK),
        lambda b, ob, y, x, oi: te.sum(
            packed_data[b, rc, y * sh + ry * dh, x * sw + rx * dw, ri].astype("int32")
            * packed[ob, rc, ry, rx, oi, ri].astype("int32"), axis=[rc, ry, rx, ri]),
        name=CONV_BLOCK)
    return te.compute((n, out_channels, out_h, out_w),
                      lambda b, o, y, x: acc[b, o // OUT_BLOCK, y, x, o % OUT_BLOCK], name=UNPACK_BLOCK)


def legalize_conv2d(bb, call):
    """The VNNI kernel for a uint8 x int8 -> int32 NCHW conv2d without padding (the integer rewrite pads with the
    zero point), or None."""
    attrs = call.attrs
    data, weight = call.args
    try:
        out_channels = int(weight.ty.shape.values[0])
        static = all(int(d) >= 0 for d in list(data.ty.shape.values) + list(weight.ty.shape.values))
    except (TypeError, ValueError, AttributeError):
        return None
    if not static or any(int(p) for p in attrs.padding) or attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW":
        return None
    if not supported(str(data.ty.dtype), str(weight.ty.dtype), str(attrs.out_dtype), int(attrs.groups), out_channels):
        return None
    packed = bb.emit(bb.call_te(pack_weight, weight, primfunc_name_hint="effc_int8_pack_weight"))
    return bb.call_te(conv2d, data, packed, [int(s) for s in attrs.strides], [int(d) for d in attrs.dilation],
                      out_channels, primfunc_name_hint="effc_conv2d_int8")
