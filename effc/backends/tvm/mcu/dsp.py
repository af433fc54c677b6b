"""The int8 convolution for Cortex-M cores with the DSP extension (M4, M7, M55): im2col per output pixel, then a
dot product of four (or two) output channels at a time on packed int16 pairs with SMLAD (ACLE `__smlad`, `__sxtb16`).

conv2d_dsp computes `col[b, y, x, k]` (the pixel's KH*KW*C window, zero-point padded, K rounded up to a multiple of
4 with zeros) and `acc[b, o, y, x] = sum_k col[b, y, x, k] * W[o, k]` with W as [O, K4] int8. schedule_dsp_conv
builds col once per pixel (stack, K4 bytes), loops over blocks of output channels inside it and tensorizes each
block's reduction (4 or 2 output channels) into `effc_dot<c>_<a>s8`, a C function written into kernels.c
(DOT_SOURCE): 4 MACs per two SMLADs with `__ARM_FEATURE_DSP`, a portable loop otherwise (so the host's gcc checks
the same kernel's numbers).
"""

from __future__ import annotations

import numpy as np

COL_BLOCK = "effc_mcu_im2col"
CONV_BLOCK = "effc_mcu_conv2d_dsp"
CHANNEL_BLOCKS = (4, 2)  # output channels per dot call, the first that divides O: the unpacked activations are reused
DOT_PREFIX = "effc_dot"
ACTIVATION_TAGS = {"int8": "s8", "uint8": "u8"}

DOT_SOURCE = r"""
#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
/* SXTB16/UXTB16 with the operand rotated by 8 (bytes 1 and 3), one instruction; GCC 12's ACLE has no form for it */
static inline int32_t effc_sxtb16_ror8(int32_t v) { int32_t r; __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v)); return r; }
static inline int32_t effc_uxtb16_ror8(int32_t v) { int32_t r; __asm__("uxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v)); return r; }
#endif
#include <string.h>

/* acc[j * acc_stride] += sum_k a[k] * w[j * k_len + k] for j < CH; k_len is a multiple of 4. The signature is
   the one TVM's C codegen declares for the extern call. */
#define EFFC_DOT(NAME, A_TYPE, UNPACK, UNPACK_ROR8, CH)                                          \
static inline void NAME(void *a_, void *w_, void *acc_, int64_t acc_stride, int32_t k_len) {  \
  const A_TYPE *a = (const A_TYPE *)a_;                                                         \
  const int8_t *w = (const int8_t *)w_;                                                         \
  int32_t *acc = (int32_t *)acc_;                                                               \
  int32_t s[CH];                                                                                \
  _Pragma("GCC unroll 4") for (int j = 0; j < CH; ++j) s[j] = acc[j * acc_stride];                \
  for (int32_t k = 0; k < k_len; k += 4) {                                                      \
    EFFC_DOT_STEP(UNPACK, UNPACK_ROR8, CH)                                                      \
  }                                                                                             \
  _Pragma("GCC unroll 4") for (int j = 0; j < CH; ++j) acc[j * acc_stride] = s[j];                \
}

#if defined(__ARM_FEATURE_DSP)
#define EFFC_DOT_STEP(UNPACK, UNPACK_ROR8, CH)                                                  \
    int32_t av;                                                                                 \
    memcpy(&av, a + k, 4);                                                                      \
    int32_t a02 = UNPACK(av), a13 = UNPACK_ROR8(av);                                            \
    _Pragma("GCC unroll 4") for (int j = 0; j < CH; ++j) {                                      \
      int32_t wv;                                                                               \
      memcpy(&wv, w + j * k_len + k, 4);                                                        \
      s[j] = __smlad(__sxtb16(wv), a02, s[j]);                                                  \
      s[j] = __smlad(effc_sxtb16_ror8(wv), a13, s[j]);                                          \
    }
#else
#define EFFC_DOT_STEP(UNPACK, UNPACK_ROR8, CH)                                                  \
    for (int j = 0; j < CH; ++j)                                                                \
      for (int32_t i = k; i < k + 4; ++i) s[j] += (int32_t)a[i] * (int32_t)w[j * k_len + i];
#endif

EFFC_DOT(effc_dot4_s8s8, int8_t, __sxtb16, effc_sxtb16_ror8, 4)
EFFC_DOT(effc_dot4_u8s8, uint8_t, __uxtb16, effc_uxtb16_ror8, 4)
EFFC_DOT(effc_dot2_s8s8, int8_t, __sxtb16, effc_sxtb16_ror8, 2)
EFFC_DOT(effc_dot2_u8s8, uint8_t, __uxtb16, effc_uxtb16_ror8, 2)
"""


def channel_block(out_channels: int) -> int | None:
    return next((c for c in CHANNEL_BLOCKS if out_channels % c == 0), None)


def fits(xq, weight: np.ndarray, attrs) -> bool:
    """Whether conv2d_dsp computes this conv: NCHW/OIHW, one group, an even number of output channels."""
    return (attrs.data_layout == "NCHW" and attrs.kernel_layout == "OIHW" and int(attrs.groups) == 1
            and channel_block(weight.shape[0]) is not None and str(xq.ty.dtype) in ACTIVATION_TAGS)


def pack_weight(weight: np.ndarray) -> np.ndarray:
    """OIHW int8 -> [O, K4]: each output channel's window flattened, zero-padded to a multiple of 4."""
    flat = weight.reshape(weight.shape[0], -1)
    k4 = -(-flat.shape[1] // 4) * 4
    return np.ascontiguousarray(np.pad(flat, ((0, 0), (0, k4 - flat.shape[1]))).astype(np.int8))


def conv2d_dsp(data, packed, padding, pad_value: int, strides, dilation, kernel: tuple[int, int]):
    """NCHW `data` (zero-point padded here) x [O, K4] int8 `packed` -> NCHW int32."""
    from tvm import te, tirx

    n, channels, height, width = (int(d) for d in data.shape)
    out_channels, k4 = (int(d) for d in packed.shape)
    kh, kw = kernel
    top, left, bottom, right = padding
    (sh, sw), (dh, dw) = strides, dilation
    out_h = (height + top + bottom - (kh - 1) * dh - 1) // sh + 1
    out_w = (width + left + right - (kw - 1) * dw - 1) // sw + 1
    window = channels * kh * kw

    def column(b, y, x, k):
        c, ry, rx = k // (kh * kw), k % (kh * kw) // kw, k % kw
        row, col = y * sh + ry * dh - top, x * sw + rx * dw - left
        inside = tirx.all(row >= 0, row < height, col >= 0, col < width)
        value = data[b, tirx.min(c, channels - 1), tirx.max(tirx.min(row, height - 1), 0),
                     tirx.max(tirx.min(col, width - 1), 0)]
        padded = tirx.if_then_else(inside, value, tirx.const(pad_value, str(data.dtype)))
        return tirx.if_then_else(k < window, padded, tirx.const(0, str(data.dtype)))

    col = te.compute((n, out_h, out_w, k4), column, name=COL_BLOCK, attrs={"effc_window": [kh, kw]})
    k = te.reduce_axis((0, k4), "k")
    return te.compute((n, out_channels, out_h, out_w),
                      lambda b, o, y, x: te.sum(col[b, y, x, k].astype("int32") * packed[o, k].astype("int32"), axis=k),
                      name=CONV_BLOCK)


def conv_kernel(builder, xq, weight: np.ndarray, attrs, zero_point: int):
    """The integer rewrite's conv_kernel hook (lower_qdq): conv2d_dsp where it fits, else None."""
    from tvm import relax

    if not fits(xq, weight, attrs):
        return None
    padding = [int(p) for p in attrs.padding]
    padding = padding * 2 if len(padding) == 2 else padding
    return builder.call_te(conv2d_dsp, xq, relax.const(pack_weight(weight)), padding, int(zero_point),
                           [int(s) for s in attrs.strides], [int(d) for d in attrs.dilation],
                           tuple(int(d) for d in weight.shape[2:]), primfunc_name_hint="conv2d_dsp")


def _register_intrinsic(k4: int, dtype: str, channels: int, spatial: bool = True) -> str:
    """The TensorIntrin `acc[0:channels] += a[0:k4] . w[0:channels, 0:k4]` calling DOT_SOURCE's function for
    `dtype` activations; returns its name. spatial: the accumulators are a channel column of an NCHW tensor
    (a convolution's, [channels, 1, 1]: TVM matches a region dim by dim), else a row of a matmul's ([channels])."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    tail = [0, 0] if spatial else []  # the accumulators' trailing unit dims
    acc_shape = (channels, *([1] * len(tail)))
    acc_strides = [T.int32() for _ in acc_shape]
    function = f"{DOT_PREFIX}{channels}_{ACTIVATION_TAGS[dtype]}s8"
    name = f"effc_mcu_{function}_{'nchw' if spatial else 'row'}_k{k4}"

    @T.prim_func(s_tir=True)
    def desc(a: T.Buffer((k4,), dtype, offset_factor=1), w: T.Buffer((channels, k4), "int8", offset_factor=1),
             acc: T.Buffer(acc_shape, "int32", offset_factor=1, strides=acc_strides)) -> None:
        with T.sblock("root"):
            T.reads(acc[0:channels, *tail], a[0:k4], w[0:channels, 0:k4])
            T.writes(acc[0:channels, *tail])
            for i, k in T.grid(channels, k4):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    acc[vi, *tail] = acc[vi, *tail] + T.cast(a[vk], "int32") * T.cast(w[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(a: T.Buffer((k4,), dtype, offset_factor=1), w: T.Buffer((channels, k4), "int8", offset_factor=1),
             acc: T.Buffer(acc_shape, "int32", offset_factor=1, strides=acc_strides)) -> None:
        with T.sblock("root"):
            T.reads(acc[0:channels, *tail], a[0:k4], w[0:channels, 0:k4])
            T.writes(acc[0:channels, *tail])
            T.evaluate(T.call_extern("void", function, a.access_ptr("r"), w.access_ptr("r"), acc.access_ptr("rw"),
                                     acc.strides[0], k4))

    TensorIntrin.register(name, desc, impl, override=True)
    return name


def schedule_dsp_conv(sch, conv) -> None:
    """Pixel loops outside, pairs of output channels inside: im2col once per pixel, the epilogue per pair, each
    pair's reduction one dot call."""
    b, o, y, x, k = sch.get_loops(conv)
    channels = channel_block(int(sch.get(o).extent))
    pairs, pair = sch.split(o, [None, channels])
    sch.reorder(b, y, x, pairs, pair, k)
    col = sch.get_sblock(COL_BLOCK)
    sch.compute_at(col, x)
    for consumer in sch.get_consumers(conv):
        sch.reverse_compute_at(consumer, pairs)
    sch.decompose_reduction(conv, pair)
    dtype = str(sch.get(col).writes[0].source.dtype)
    k4 = int(sch.get(k).extent)
    sch.tensorize(pair, _register_intrinsic(k4, dtype, channels))
    _split_window_loop(sch, col, k4)


def _split_window_loop(sch, col, k4: int) -> None:
    """im2col's loop over k as (channel, row, column) when K needs no padding, so no k // (KH*KW) per element."""
    from tvm.s_tir import Schedule  # noqa: F401  (for the reader: sch is one)

    window = _window(sch, col)
    if window is None or k4 % (window[0] * window[1]):
        return
    kh, kw = window
    sch.split(sch.get_loops(col)[-1], [k4 // (kh * kw), kh, kw])


def _window(sch, col) -> tuple[int, int] | None:
    """(KH, KW) of the conv whose im2col block `col` is, from the block's name annotation (set by conv2d_dsp)."""
    annotations = sch.get(col).annotations
    if "effc_window" not in annotations:
        return None
    kh, kw = (int(v) for v in annotations["effc_window"])
    return kh, kw


# ------------------------------------------------------------------------------------------ int8 matmuls
DENSE_BLOCK = "effc_mcu_dense_dsp"


def dense_dsp(data, transposed):
    """[M, K] int8/uint8 `data` x [N, K] int8 `transposed` (the weight's rows per output) -> [M, N] int32."""
    from tvm import te

    m, k_len = (int(d) for d in data.shape)
    n = int(transposed.shape[0])
    k = te.reduce_axis((0, k_len), "k")
    return te.compute((m, n), lambda i, j: te.sum(data[i, k].astype("int32") * transposed[j, k].astype("int32"), axis=k),
                      name=DENSE_BLOCK)


def _dense_fits(call) -> bool:
    import tvm

    x, w = call.args
    if not isinstance(w, tvm.ir.GenericConst) or str(call.attrs.out_dtype) != "int32":
        return False
    weight = w.value.numpy()
    return (weight.dtype == np.int8 and weight.ndim == 2 and str(x.ty.dtype) in ACTIVATION_TAGS
            and getattr(x.ty, "ndim", 0) == 2 and weight.shape[0] % 4 == 0 and channel_block(weight.shape[1]) is not None)


def rewrite_matmuls(mod):
    """`mod` with every int8 x int8-constant -> int32 matmul of `main` (the integer rewrite's Gemms) as dense_dsp
    over the weight transposed, so each output's weights are contiguous for the SMLAD dot."""
    from tvm import relax

    from effc.backends.tvm.mcu.relax_calls import replace_calls

    def dense(builder, call):
        if not _dense_fits(call):
            return None
        transposed = np.ascontiguousarray(call.args[1].value.numpy().T)
        return builder.call_te(dense_dsp, call.args[0], relax.const(transposed), primfunc_name_hint="dense_dsp")

    return replace_calls(mod, "relax.matmul", dense)


def schedule_dsp_dense(sch, dense) -> None:
    """Blocks of outputs per dot call, the epilogue per block."""
    _, j, k = sch.get_loops(dense)
    dtype = str(sch.get(dense).reads[0].source.dtype)  # the activations (read first by dense_dsp's body)
    channels = channel_block(int(sch.get(j).extent))
    blocks, block = sch.split(j, [None, channels])
    for consumer in sch.get_consumers(dense):
        sch.reverse_compute_at(consumer, blocks)
    sch.decompose_reduction(dense, block)
    sch.tensorize(block, _register_intrinsic(int(sch.get(k).extent), dtype, channels, spatial=False))
