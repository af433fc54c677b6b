"""int8 convolutions on dot-product instructions: TE compute, weight packing, the tensor intrinsics.

A dot-product instruction multiplies 4 activations (one 32-bit lane, broadcast) by `lanes` x 4 int8 weights and
adds each group of 4 into one of `lanes` int32 accumulators: x86 AVX-512 VNNI `vpdpbusd` (uint8 activations, 16
lanes), ARM `sdot` (int8 activations, 4 lanes), and on x86 without VNNI the pair `pmaddubsw` + `pmaddwd` (AVX2: 8
lanes, AVX-512BW: 16; exact for weights up to 64 in magnitude); on ARM without dotprod `smull` + `saddlp` + `addp`
(4 lanes). So the kernel reads its input as [N, C/4, H, W, 4] (packed inside
the kernel from NCHW, spatially padded with the zero point, channels padded to a multiple of 4 whose weights are
zero) and its weights as [O/lanes, C/4, KH, KW, lanes, 4] (packed at compile time, output channels padded to
whole vectors), accumulates
[N, O/lanes, OH, OW, lanes] in registers (rules.py: a row tile of output pixels x `lanes` channels, one
instruction per pixel and 4 input channels) and writes NCHW back through the fused requantization.

TVM 0.27's own `dot_16x4_vnni` intrinsic does not build with its bundled LLVM 22 (it passes <16 x i32> operands
where `llvm.x86.avx512.vpdpbusd.512` takes <64 x i8>; see NOTES): `effc_dot_16x4_vnni` is the same description with
the operands reinterpreted as u8x64 and i8x64. Both are registered here rather than imported: importing
tvm.s_tir.tensor_intrin parses every target's intrinsics (about 25 s).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

PACK_DATA_BLOCK = "effc_int8_pack_data"
CONV_BLOCK = "effc_conv2d_dot_"  # + the instruction's key
UNPACK_BLOCK = "effc_int8_unpack"
BLOCKED_CONV_BLOCK = "effc_conv2d_blocked_dot_"  # + the instruction's key
IN_BLOCK = 4  # input channels per 32-bit lane
MAX_ROW_TILE = 14  # output pixels per register tile (one accumulator vector each)


@dataclass(frozen=True)
class DotInstruction:
    key: str  # "vnni", "sdot", "pmaddubsw", ...
    feature: str  # the ISA.int8_dot entry that provides it
    data_dtype: str  # the activations it multiplies (weights are int8)
    lanes: int  # int32 accumulators per vector
    llvm_intrinsic: str
    max_weight: int | None = None  # the largest |weight| whose intermediate sums stay exact (None: any int8)
    pixels: int = 1  # output pixels per instruction (ARM i8mm `smmla`: a 2x8 by 8x2 matrix product, 2)
    in_block: int = IN_BLOCK  # input channels per dot


# x86 without VNNI: `pmaddubsw` (u8 x s8, adjacent pairs summed in int16, saturating) then `pmaddwd` by ones (pairs
# of int16 summed into int32). Exact while every pair sum fits int16: 2 * 255 * 64 = 32640, so |weight| <= 64 (the
# int8 pass keeps weights to 7 bits for these CPUs, ISA.int8_weight_bits).
PAIR_SUM_MAX_WEIGHT = 64

INSTRUCTIONS = (
    DotInstruction("vnni", "avx512_vnni", "uint8", 16, "llvm.x86.avx512.vpdpbusd.512"),
    DotInstruction("avxvnni", "avx_vnni", "uint8", 8, "llvm.x86.avx512.vpdpbusd.256"),  # VEX vpdpbusd, ymm
    # i8mm: 2 pixels x 8 input channels by 2 output channels x 8 per instruction, twice sdot's products
    DotInstruction("smmla", "i8mm", "int8", 2, "llvm.aarch64.neon.smmla.v4i32.v16i8", pixels=2, in_block=8),
    DotInstruction("sdot", "dotprod", "int8", 4, "llvm.aarch64.neon.sdot.v4i32.v16i8"),
    DotInstruction("pmaddubsw512", "avx512bw", "uint8", 16, "llvm.x86.avx512.pmaddubs.w.512", PAIR_SUM_MAX_WEIGHT),
    DotInstruction("pmaddubsw", "avx2", "uint8", 8, "llvm.x86.avx2.pmadd.ub.sw", PAIR_SUM_MAX_WEIGHT),
    # ARM NEON without dotprod: `smull` (s8 x s8 -> s16), `saddlp` (pairs -> s32), `addp`; exact while no product
    # pair reaches 2^15, i.e. no weight of -128 (the int8 pass's symmetric weights stop at -127)
    DotInstruction("smull", "+neon", "int8", 4, "llvm.aarch64.neon.smull.v8i16", 127),
)
# the int16 -> int32 pair sum after each pmaddubsw
PAIR_SUM_INTRINSIC = {"pmaddubsw512": "llvm.x86.avx512.pmaddw.d.512", "pmaddubsw": "llvm.x86.avx2.pmadd.wd"}


def instructions_for(isa) -> list[DotInstruction]:
    """The dot-product instructions the target's ISA record has (in `int8_dot` or `features`), best first."""
    return [i for i in INSTRUCTIONS if i.feature in (*isa.int8_dot, *isa.features)]


def instruction_named(key: str) -> DotInstruction:
    return next(i for i in INSTRUCTIONS if i.key == key)


# MetaSchedule's x86 rules (MultiLevelTilingWithIntrin on an avx512vnni target) look the VNNI intrinsic up by this
# name; TVM registers it with the implementation its LLVM 22 rejects, so tuning registers effc's under it.
METASCHEDULE_VNNI = "dot_16x4_vnni"


def register_for_metaschedule() -> None:
    """Registers effc's VNNI dot under MetaSchedule's name for it (after tvm.s_tir.tensor_intrin is imported, which
    registers TVM's own): tuned integer kernels then tensorize with an implementation that builds."""
    register_intrinsic.__wrapped__("vnni", METASCHEDULE_VNNI)


@functools.cache
def register_intrinsic(key: str, name: str | None = None) -> str:
    """Registers the tensor intrinsic of instruction `key` (once per process; a tuning worker needs it too) under
    `name` (default effc's own) and returns the name."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    inst = instruction_named(key)
    if inst.pixels != 1:
        return _register_matrix_intrinsic(inst)
    lanes, dtype = inst.lanes, inst.data_dtype
    step = _accumulate_step(inst)

    @T.prim_func(s_tir=True)
    def desc(a: T.Buffer((4,), dtype, offset_factor=1), b: T.Buffer((lanes, 4), "int8", offset_factor=1),
             c: T.Buffer((lanes,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:4], b[0:lanes, 0:4])
            T.writes(c[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        c[vi] = c[vi] + T.cast(a[vk], "int32") * T.cast(b[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(a: T.Buffer((4,), dtype, offset_factor=1), b: T.Buffer((lanes, 4), "int8", offset_factor=1),
             c: T.Buffer((lanes,), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:lanes], a[0:4], b[0:lanes, 0:4])
            T.writes(c[0:lanes])
            c[T.ramp(T.int32(0), 1, lanes)] = step(a, b, c)

    name = name or f"effc_dot_{lanes}x4_{key}"
    TensorIntrin.register(name, desc, impl, override=True)
    return name


def _accumulate_step(inst: DotInstruction):
    """(a, b, c buffers of the intrinsic) -> c + a . b as one int32 vector, in `inst`'s instructions."""
    from tvm.script import tirx as T

    lanes, dtype, key = inst.lanes, inst.data_dtype, inst.key

    def intrinsic(name: str, *args, dtype: str):
        return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(name), *args, dtype=dtype)

    def broadcast_a(a, copies: int, as_dtype: str):  # the 4 activations repeated in every 32-bit lane
        return T.reinterpret(T.broadcast(T.reinterpret(a.vload([0], f"{dtype}x4"), dtype="int32"), copies),
                             dtype=f"{as_dtype}x{4 * copies}")

    def dot(a, b, c):
        return intrinsic(inst.llvm_intrinsic, c.vload([0], dtype=f"int32x{lanes}"), broadcast_a(a, lanes, dtype),
                         b.vload([0, 0], dtype=f"int8x{4 * lanes}"), dtype=f"int32x{lanes}")

    def pair_sums(a, b, c):
        pairs = intrinsic(inst.llvm_intrinsic, broadcast_a(a, lanes, dtype), b.vload([0, 0], dtype=f"int8x{4 * lanes}"),
                          dtype=f"int16x{2 * lanes}")
        return c.vload([0], dtype=f"int32x{lanes}") + intrinsic(
            PAIR_SUM_INTRINSIC[key], pairs, T.broadcast(T.int16(1), 2 * lanes), dtype=f"int32x{lanes}")

    def widening(a, b, c):  # lanes 0-1 from the low 8 weights, 2-3 from the high 8
        halves = [intrinsic("llvm.aarch64.neon.saddlp.v4i32.v8i16",
                            intrinsic(inst.llvm_intrinsic, broadcast_a(a, 2, "int8"), b.vload([row, 0], dtype="int8x8"),
                                      dtype="int16x8"), dtype="int32x4") for row in (0, 2)]
        return c.vload([0], dtype="int32x4") + intrinsic("llvm.aarch64.neon.addp.v4i32", *halves, dtype="int32x4")

    return pair_sums if key in PAIR_SUM_INTRINSIC else widening if key == "smull" else dot


def _register_matrix_intrinsic(inst: DotInstruction) -> str:
    """`smmla`: c[pixel p, lane j] += sum_k a[p, k] * b[j, k] for 2 pixels, 2 lanes, 8 k; the accumulator tile
    [2 pixels, 2 lanes] is 4 consecutive int32 of the [.., OW, lanes] output, the instruction's own order."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    pixels, lanes, k_block = inst.pixels, inst.lanes, inst.in_block

    @T.prim_func(s_tir=True)
    def desc(a: T.Buffer((pixels, k_block), "int8", offset_factor=1),
             b: T.Buffer((lanes, k_block), "int8", offset_factor=1),
             c: T.Buffer((pixels, lanes), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:pixels, 0:lanes], a[0:pixels, 0:k_block], b[0:lanes, 0:k_block])
            T.writes(c[0:pixels, 0:lanes])
            for p, i, k in T.grid(pixels, lanes, k_block):
                with T.sblock("update"):
                    vp, vi, vk = T.axis.remap("SSR", [p, i, k])
                    c[vp, vi] = c[vp, vi] + T.cast(a[vp, vk], "int32") * T.cast(b[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(a: T.Buffer((pixels, k_block), "int8", offset_factor=1),
             b: T.Buffer((lanes, k_block), "int8", offset_factor=1),
             c: T.Buffer((pixels, lanes), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(c[0:pixels, 0:lanes], a[0:pixels, 0:k_block], b[0:lanes, 0:k_block])
            T.writes(c[0:pixels, 0:lanes])
            c[0, T.ramp(T.int32(0), 1, pixels * lanes)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id(inst.llvm_intrinsic), c.vload([0, 0], dtype="int32x4"),
                a.vload([0, 0], dtype="int8x16"), b.vload([0, 0], dtype="int8x16"), dtype="int32x4")

    name = f"effc_dot_{pixels}x{lanes}x{k_block}_{inst.key}"
    TensorIntrin.register(name, desc, impl, override=True)
    return name


def pack_weight(weight: np.ndarray, lanes: int, in_block: int = IN_BLOCK, channel_multiple: int | None = None) -> np.ndarray:
    """[O, C, KH, KW] int8 -> [ceil(O/lanes), C'/in_block, KH, KW, lanes, in_block], C' the next multiple of
    `channel_multiple` (default in_block; the input's block), channels past O and C zero."""
    out_channels, channels, kh, kw = weight.shape
    multiple = channel_multiple or in_block
    out_blocks, blocks = -(-out_channels // lanes), -(-channels // multiple) * multiple // in_block
    padded = np.zeros((out_blocks * lanes, blocks * in_block, kh, kw), np.int8)
    padded[:out_channels, :channels] = weight
    packed = padded.reshape(out_blocks, lanes, blocks, in_block, kh, kw)
    return np.ascontiguousarray(packed.transpose(0, 2, 4, 5, 1, 3))


def conv2d(data, packed, padding, pad_value: int, strides, dilation, out_channels: int, key: str):
    """NCHW uint8/int8 `data`, padded here with `pad_value` (the zero point), x packed int8 weights -> NCHW int32,
    its product block named for instruction `key`."""
    from tvm import te, tirx

    n, channels, height, width = (int(d) for d in data.shape)
    out_blocks, blocks, kh, kw, lanes, in_block = (int(d) for d in packed.shape)
    dtype = str(data.dtype)
    top, left, bottom, right = padding
    (sh, sw), (dh, dw) = strides, dilation
    height_p, width_p = height + top + bottom, width + left + right
    out_h, out_w = (height_p - (kh - 1) * dh - 1) // sh + 1, (width_p - (kw - 1) * dw - 1) // sw + 1

    def lane(b, c, y, x, i):
        ch = c * in_block + i
        inside = tirx.all(ch < channels, y >= top, y < height + top, x >= left, x < width + left)
        value = data[b, tirx.min(ch, channels - 1), tirx.max(tirx.min(y - top, height - 1), 0),
                     tirx.max(tirx.min(x - left, width - 1), 0)]
        return tirx.if_then_else(inside, value, tirx.const(pad_value, dtype))

    packed_data = te.compute((n, blocks, height_p, width_p, in_block), lane, name=PACK_DATA_BLOCK)
    rc, ry, rx, ri = (te.reduce_axis((0, e), name) for e, name in ((blocks, "rc"), (kh, "ry"), (kw, "rx"), (in_block, "ri")))
    acc = te.compute(
        (n, out_blocks, out_h, out_w, lanes),
        lambda b, ob, y, x, oi: te.sum(
            packed_data[b, rc, y * sh + ry * dh, x * sw + rx * dw, ri].astype("int32")
            * packed[ob, rc, ry, rx, oi, ri].astype("int32"), axis=[rc, ry, rx, ri]),
        name=CONV_BLOCK + key)
    return te.compute((n, out_channels, out_h, out_w),
                      lambda b, o, y, x: acc[b, o // lanes, y, x, o % lanes], name=UNPACK_BLOCK)


def conv2d_blocked(data, packed, padding, pad_value: int, strides, dilation, channels: int, key: str):
    """uint8/int8 `data` [N, C/l, H, W, l] holding `channels` real channels (blocked.py) or NCHW (then packed here
    into [N, C/4, H, W, 4], its own blocks of 4), padded with `pad_value` (the zero point) where the window needs
    it, x packed int8 weights [O/lanes, C'/4, KH, KW, lanes, 4] -> [N, O/lanes, OH, OW, lanes] int32, the
    accumulators' own layout; its product block named for instruction `key`. A blocked input without padding is
    read in place: no copy."""
    from tvm import te, tirx

    n, height, width = (int(data.shape[i]) for i in (0, 2, 3))
    out_blocks, _, kh, kw, lanes, in_block = (int(d) for d in packed.shape)
    dtype = str(data.dtype)
    top, left, bottom, right = padding
    (sh, sw), (dh, dw) = strides, dilation
    height_p, width_p = height + top + bottom, width + left + right
    out_h, out_w = (height_p - (kh - 1) * dh - 1) // sh + 1, (width_p - (kw - 1) * dw - 1) // sw + 1
    block = int(data.shape[4]) if len(data.shape) == 5 else in_block
    in_blocks = -(-channels // block)

    def padded(b, c, y, x, i):
        inside = tirx.all(y >= top, y < height + top, x >= left, x < width + left)
        row, column = tirx.max(tirx.min(y - top, height - 1), 0), tirx.max(tirx.min(x - left, width - 1), 0)
        if len(data.shape) == 5:
            return tirx.if_then_else(inside, data[b, c, row, column, i], tirx.const(pad_value, dtype))
        ch = c * block + i
        value = data[b, tirx.min(ch, channels - 1), row, column]
        return tirx.if_then_else(tirx.all(inside, ch < channels), value, tirx.const(pad_value, dtype))

    if len(data.shape) == 5 and not any(padding):
        source = data
    else:
        source = te.compute((n, in_blocks, height_p, width_p, block), padded, name=PACK_DATA_BLOCK)
    rb, rc, ry, rx, ri = (te.reduce_axis((0, e), name) for e, name in
                          ((in_blocks, "rb"), (block // in_block, "rc"), (kh, "ry"), (kw, "rx"), (in_block, "ri")))
    groups = block // in_block
    return te.compute(
        (n, out_blocks, out_h, out_w, lanes),
        lambda b, ob, y, x, oi: te.sum(
            source[b, rb, y * sh + ry * dh, x * sw + rx * dw, rc * in_block + ri].astype("int32")
            * packed[ob, rb * groups + rc, ry, rx, oi, ri].astype("int32"), axis=[rb, rc, ry, rx, ri]),
        name=BLOCKED_CONV_BLOCK + key)


def conv_kernel(inst: DotInstruction):
    """The integer rewrite's conv_kernel hook for `inst`: (builder, xq, int8 weight, conv2d attrs, zero point) ->
    the int32 NCHW conv2d through this kernel, or None where it does not apply (activations of the other
    signedness, grouped convs)."""
    return functools.partial(_conv_kernel, inst)


def fits(inst: DotInstruction, xq, weight: np.ndarray, attrs, dtype: str | None = None) -> bool:
    """Whether `inst`'s kernel computes this conv exactly: activations (of `dtype`, default xq's) of its signedness,
    one group, NCHW/OIHW, weights small enough for its intermediate sums."""
    if (dtype or str(xq.ty.dtype)) != inst.data_dtype or int(attrs.groups) != 1:
        return False
    if attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW":
        return False
    if inst.pixels != 1 and not _pixel_pairs_contiguous(inst, xq, weight, attrs):
        return False
    return inst.max_weight is None or int(np.abs(weight.astype(np.int32)).max(initial=0)) <= inst.max_weight


def _pixel_pairs_contiguous(inst: DotInstruction, xq, weight: np.ndarray, attrs) -> bool:
    """Whether `inst`'s pixels per instruction read consecutive packed columns (column stride 1) and the output
    width is a whole number of them."""
    padding = [int(p) for p in attrs.padding]
    padding = padding * 2 if len(padding) == 2 else padding
    width = int(xq.ty.shape.values[3]) + padding[1] + padding[3]
    out_w = (width - (weight.shape[3] - 1) * int(attrs.dilation[1]) - 1) // int(attrs.strides[1]) + 1
    return int(attrs.strides[1]) == 1 and out_w % inst.pixels == 0


def blocked_conv_kernel(inst: DotInstruction):
    """The integer rewrite's blocked_kernel hook for `inst`: (builder, xq or Blocked xq, int8 weight, conv2d attrs,
    zero point) -> Blocked int32 [N, O/lanes, OH, OW, lanes], or None where the kernel does not apply (see `fits`;
    instructions of more than one pixel, whose accumulator tile is not one pixel's vector; blocks of another
    width)."""
    return functools.partial(_blocked_conv_kernel, inst)


def _blocked_conv_kernel(inst: DotInstruction, builder, xq, weight: np.ndarray, attrs, zero_point: int):
    from tvm import relax

    from effc.backends.tvm.integer.blocked import Blocked

    if inst.pixels != 1:
        return None
    source = xq.expr if isinstance(xq, Blocked) else xq
    if isinstance(xq, Blocked) and (xq.lanes % inst.in_block or xq.channels != weight.shape[1]):
        return None
    if not fits(inst, source, weight, attrs, str(source.ty.dtype)):
        return None
    block = xq.lanes if isinstance(xq, Blocked) else inst.in_block
    packed = pack_weight(weight, inst.lanes, inst.in_block, channel_multiple=block)
    call = builder.call_te(conv2d_blocked, source, relax.const(packed), _padding(attrs), zero_point,
                           [int(s) for s in attrs.strides], [int(d) for d in attrs.dilation], weight.shape[1], inst.key,
                           primfunc_name_hint="effc_conv2d_int8")
    return Blocked(call, inst.lanes, weight.shape[0])


def _padding(attrs) -> list[int]:
    padding = [int(p) for p in attrs.padding]
    return padding * 2 if len(padding) == 2 else padding


def _conv_kernel(inst: DotInstruction, builder, xq, weight: np.ndarray, attrs, zero_point: int):
    from tvm import relax

    if not fits(inst, xq, weight, attrs):
        return None
    return builder.call_te(conv2d, xq, relax.const(pack_weight(weight, inst.lanes, inst.in_block)), _padding(attrs),
                           zero_point, [int(s) for s in attrs.strides], [int(d) for d in attrs.dilation],
                           weight.shape[0], inst.key, primfunc_name_hint="effc_conv2d_int8")
