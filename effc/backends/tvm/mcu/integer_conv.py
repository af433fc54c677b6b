"""The integer convolution of the microcontroller lowering: int8/uint8 activations x int8 weights -> int32, NCHW,
any groups, with the zero-point padding read inside the kernel.

The integer rewrite's default (effc.backends.tvm.integer) pads with the zero point as a separate Relax op, which
FuseOps does not fuse into the convolution: on a microcontroller that is one more kernel and a padded copy of the
activations in the arena. Here the padding is a stage of the convolution's own PrimFunc, which schedule.py inlines
into the reads, and the requantizing epilogue still fuses after it.
"""

from __future__ import annotations

import numpy as np

PAD_BLOCK = "effc_mcu_int8_pad"
CONV_BLOCK = "effc_mcu_conv2d_int8"


def conv2d_int8(data, weight, padding, pad_value: int, strides, dilation, groups: int):
    """NCHW `data` (padded here with `pad_value`) x OIHW int8 `weight` -> NCHW int32."""
    from tvm import te, tirx

    n, channels, height, width = (int(d) for d in data.shape)
    out_channels, group_channels, kh, kw = (int(d) for d in weight.shape)
    top, left, bottom, right = padding
    (sh, sw), (dh, dw) = strides, dilation
    height_p, width_p = height + top + bottom, width + left + right
    out_h, out_w = (height_p - (kh - 1) * dh - 1) // sh + 1, (width_p - (kw - 1) * dw - 1) // sw + 1
    per_group = out_channels // groups

    def pixel(b, c, y, x):
        inside = tirx.all(y >= top, y < height + top, x >= left, x < width + left)
        value = data[b, c, tirx.max(tirx.min(y - top, height - 1), 0), tirx.max(tirx.min(x - left, width - 1), 0)]
        return tirx.if_then_else(inside, value, tirx.const(pad_value, str(data.dtype)))

    padded = te.compute((n, channels, height_p, width_p), pixel, name=PAD_BLOCK)
    rc, ry, rx = te.reduce_axis((0, group_channels), "rc"), te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    return te.compute(
        (n, out_channels, out_h, out_w),
        lambda b, o, y, x: te.sum(
            padded[b, (o // per_group) * group_channels + rc, y * sh + ry * dh, x * sw + rx * dw].astype("int32")
            * weight[o, rc, ry, rx].astype("int32"), axis=[rc, ry, rx]),
        name=CONV_BLOCK)


def conv_kernel(builder, xq, weight: np.ndarray, attrs, zero_point: int):
    """The integer rewrite's conv_kernel hook (lower_qdq) for NCHW/OIHW convolutions; None for other layouts."""
    from tvm import relax

    if attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW":
        return None
    padding = [int(p) for p in attrs.padding]
    padding = padding * 2 if len(padding) == 2 else padding
    return builder.call_te(conv2d_int8, xq, relax.const(weight), padding, int(zero_point),
                           [int(s) for s in attrs.strides], [int(d) for d in attrs.dilation], int(attrs.groups),
                           primfunc_name_hint="conv2d_int8")
