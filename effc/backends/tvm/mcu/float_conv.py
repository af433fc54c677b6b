"""The float convolution of the microcontroller lowering: im2col per output pixel, then four output channels at a
time with their accumulators in registers (gcc contracts the multiply-adds into VFMA).

Relax's legalized conv2d reads the input through a padding check on every tap, with the index arithmetic of all
four window dims, per MAC. Here `rewrite_convs` replaces each float NCHW conv2d of a constant weight by
conv2d_im2col: `col[b, y, x, k]` (the pixel's C*KH*KW window, zero padded) computed once per pixel, and
`out[b, o, y, x] = sum_k col[b, y, x, k] * W[o, k]` with W as [O, K]. schedule_im2col_conv orders the loops
pixel, channel block, k, channel (unrolled), so each k loads one activation for four products.
"""

from __future__ import annotations

import numpy as np

COL_BLOCK = "effc_mcu_im2col_f32"
CONV_BLOCK = "effc_mcu_conv2d_im2col"
CHANNEL_BLOCKS = (4, 2)


def conv2d_im2col(data, weight, padding, strides, dilation, kernel: tuple[int, int]):
    """NCHW float `data` (zero padded here) x [O, C*KH*KW] `weight` -> NCHW."""
    from tvm import te, tirx

    n, channels, height, width = (int(d) for d in data.shape)
    out_channels = int(weight.shape[0])
    kh, kw = kernel
    top, left, bottom, right = padding
    (sh, sw), (dh, dw) = strides, dilation
    out_h = (height + top + bottom - (kh - 1) * dh - 1) // sh + 1
    out_w = (width + left + right - (kw - 1) * dw - 1) // sw + 1

    def column(b, y, x, c, ry, rx):
        row, col = y * sh + ry * dh - top, x * sw + rx * dw - left
        inside = tirx.all(row >= 0, row < height, col >= 0, col < width)
        value = data[b, c, tirx.max(tirx.min(row, height - 1), 0), tirx.max(tirx.min(col, width - 1), 0)]
        return tirx.if_then_else(inside, value, tirx.const(0, str(data.dtype)))

    col = te.compute((n, out_h, out_w, channels, kh, kw), column, name=COL_BLOCK)
    rc, ry, rx = te.reduce_axis((0, channels), "rc"), te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    return te.compute((n, out_channels, out_h, out_w),
                      lambda b, o, y, x: te.sum(col[b, y, x, rc, ry, rx] * weight[o, rc * kh * kw + ry * kw + rx],
                                                axis=[rc, ry, rx]),
                      name=CONV_BLOCK)


def _fits(call) -> bool:
    import tvm

    x, w = call.args
    attrs = call.attrs
    return (isinstance(w, tvm.ir.GenericConst) and str(x.ty.dtype) == "float32" and str(w.ty.dtype) == "float32"
            and attrs.data_layout == "NCHW" and attrs.kernel_layout == "OIHW" and attrs.out_layout in ("NCHW", "")
            and int(attrs.groups) == 1 and str(attrs.out_dtype) in ("float32", "void", "", "None"))


def rewrite_convs(mod):
    """`mod` with every float NCHW conv2d of `main` over a constant weight (one group) as conv2d_im2col."""
    from tvm import relax

    from effc.backends.tvm.mcu.relax_calls import replace_calls

    def im2col(builder, call):
        if not _fits(call):
            return None
        attrs = call.attrs
        weight = call.args[1].value.numpy()
        padding = [int(p) for p in attrs.padding]
        padding = padding * 2 if len(padding) == 2 else padding
        return builder.call_te(
            conv2d_im2col, call.args[0], relax.const(np.ascontiguousarray(weight.reshape(weight.shape[0], -1))),
            padding, [int(s) for s in attrs.strides], [int(d) for d in attrs.dilation],
            tuple(int(d) for d in weight.shape[2:]), primfunc_name_hint="conv2d_im2col")

    return replace_calls(mod, "relax.nn.conv2d", im2col)


def schedule_im2col_conv(sch, conv) -> None:
    """Pixel loops outside, blocks of output channels inside, the channel loop innermost and unrolled."""
    b, o, y, x, rc, ry, rx = sch.get_loops(conv)
    extent = int(sch.get(o).extent)
    channels = next((c for c in CHANNEL_BLOCKS if extent % c == 0), 1)
    blocks, block = sch.split(o, [None, channels])
    sch.reorder(b, y, x, blocks, rc, ry, rx, block)
    sch.compute_at(sch.get_sblock(COL_BLOCK), x)
    for consumer in sch.get_consumers(conv):
        sch.reverse_compute_at(consumer, blocks)
    sch.decompose_reduction(conv, rc)
    sch.fuse(rc, ry, rx)  # one loop over the window: col and the weight rows are both contiguous in it
    sch.unroll(block)
