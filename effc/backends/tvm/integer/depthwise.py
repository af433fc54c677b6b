"""Integer depthwise convolutions (MobileNet's): uint8/int8 activations x int8 weights -> int32, NCHW.

Each output is a KH x KW window of one channel: no dot-product instruction fits (4 consecutive products of one
output would be 4 taps of a row, not channels), so the kernel widens to int32 and multiplies along the output row,
vectorized (rules.py `int8-depthwise`). The zero-point padding is built per channel plane inside the kernel.
"""

from __future__ import annotations

import functools

import numpy as np

PAD_BLOCK = "effc_int8_depthwise_pad"
CONV_BLOCK = "effc_depthwise_int8"


def depthwise_conv2d(data, weight, padding, pad_value: int, strides, dilation):
    """NCHW `data` padded here with `pad_value` x [C, 1, KH, KW] int8 `weight` -> NCHW int32."""
    from tvm import te, tirx

    n, channels, height, width = (int(d) for d in data.shape)
    kh, kw = (int(d) for d in weight.shape[2:])
    top, left, bottom, right = padding
    (sh, sw), (dh, dw) = strides, dilation
    height_p, width_p = height + top + bottom, width + left + right
    out_h, out_w = (height_p - (kh - 1) * dh - 1) // sh + 1, (width_p - (kw - 1) * dw - 1) // sw + 1

    def pixel(b, c, y, x):
        inside = tirx.all(y >= top, y < height + top, x >= left, x < width + left)
        value = data[b, c, tirx.max(tirx.min(y - top, height - 1), 0), tirx.max(tirx.min(x - left, width - 1), 0)]
        return tirx.if_then_else(inside, value, tirx.const(pad_value, str(data.dtype)))

    padded = te.compute((n, channels, height_p, width_p), pixel, name=PAD_BLOCK)
    ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    return te.compute(
        (n, channels, out_h, out_w),
        lambda b, c, y, x: te.sum(padded[b, c, y * sh + ry * dh, x * sw + rx * dw].astype("int32")
                                  * weight[c, 0, ry, rx].astype("int32"), axis=[ry, rx]),
        name=CONV_BLOCK)


def fits(xq, weight: np.ndarray, attrs) -> bool:
    """Whether this conv is depthwise in NCHW/OIHW (groups == channels, one weight plane per channel)."""
    channels = int(xq.ty.shape.values[1])
    if int(attrs.groups) != channels or weight.shape[0] != channels or weight.shape[1] != 1:
        return False
    return attrs.data_layout == "NCHW" and attrs.kernel_layout == "OIHW"


def conv_kernel(builder, xq, weight: np.ndarray, attrs, zero_point: int):
    """The integer rewrite's conv_kernel hook for depthwise convolutions (groups == channels, one weight per
    channel plane), None for any other."""
    from tvm import relax

    if not fits(xq, weight, attrs):
        return None
    padding = [int(p) for p in attrs.padding]
    padding = padding * 2 if len(padding) == 2 else padding
    return builder.call_te(depthwise_conv2d, xq, relax.const(weight), padding, zero_point,
                           [int(s) for s in attrs.strides], [int(d) for d in attrs.dilation],
                           primfunc_name_hint="effc_depthwise_int8")


def depthwise_conv2d_blocked(data, weight, padding, pad_value: int, strides, dilation):
    """Blocked `data` [N, C/l, H, W, l] padded here with `pad_value` x [C/l, 1, KH, KW, 1, l] int8 `weight` ->
    [N, C/l, OH, OW, l] int32; its blocks are named as the float blocked depthwise kernel's (cpu/kernels.py), whose
    schedule (`blocked-depthwise`: a row tile of pixels x one vector of channels) fits it unchanged."""
    from tvm import te, topi

    from effc.backends.tvm.cpu.kernels import NCHWC_DEPTHWISE_BLOCK
    from effc.backends.tvm.cpu.kernels import PAD_BLOCK as BLOCKED_PAD_BLOCK

    n, blocks, height, width, lanes = (int(d) for d in data.shape)
    kh, kw = (int(d) for d in weight.shape[2:4])
    top, left, bottom, right = padding
    (sh, sw), (dh, dw) = strides, dilation
    out_h = (height + top + bottom - (kh - 1) * dh - 1) // sh + 1
    out_w = (width + left + right - (kw - 1) * dw - 1) // sw + 1
    padded = topi.nn.pad(data, [0, 0, top, left, 0], [0, 0, bottom, right, 0], pad_value=pad_value,
                         name=BLOCKED_PAD_BLOCK) if any(padding) else data
    ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    return te.compute(
        (n, blocks, out_h, out_w, lanes),
        lambda b, c, y, x, v: te.sum(padded[b, c, y * sh + ry * dh, x * sw + rx * dw, v].astype("int32")
                                     * weight[c, 0, ry, rx, 0, v].astype("int32"), axis=[ry, rx]),
        name=NCHWC_DEPTHWISE_BLOCK)


def blocked_conv_kernel(builder, xq, weight: np.ndarray, attrs, zero_point: int):
    """The integer rewrite's blocked_kernel hook for depthwise convolutions whose input is blocked (a Blocked xq):
    Blocked int32 output in the same blocks; None for any other."""
    from tvm import relax

    from effc.backends.tvm.integer.blocked import Blocked

    if not isinstance(xq, Blocked) or xq.channels != weight.shape[0] or weight.shape[1] != 1:
        return None
    if int(attrs.groups) != xq.channels or attrs.data_layout != "NCHW" or attrs.kernel_layout != "OIHW":
        return None
    lanes, (channels, _, kh, kw) = xq.lanes, weight.shape
    blocks = -(-channels // lanes)
    padded = np.zeros((blocks * lanes, kh, kw), np.int8)
    padded[:channels] = weight[:, 0]
    packed = np.ascontiguousarray(padded.reshape(blocks, lanes, kh, kw).transpose(0, 2, 3, 1))[:, None, :, :, None, :]
    padding = [int(p) for p in attrs.padding]
    padding = padding * 2 if len(padding) == 2 else padding
    call = builder.call_te(depthwise_conv2d_blocked, xq.expr, relax.const(np.ascontiguousarray(packed)), padding,
                           zero_point, [int(s) for s in attrs.strides], [int(d) for d in attrs.dilation],
                           primfunc_name_hint="effc_depthwise_int8")
    return Blocked(call, lanes, channels)


def first_of(*kernels):
    """A conv_kernel hook trying `kernels` in order (None entries skipped)."""
    kernels = [k for k in kernels if k is not None]
    return functools.partial(_first_of, kernels)


def _first_of(kernels, *args):
    for kernel in kernels:
        result = kernel(*args)
        if result is not None:
            return result
    return None
