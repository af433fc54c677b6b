"""effc's CPU kernels as TE computes, used in place of TVM's stock legalizations.

A dense 2-D convolution (groups=1, NCHW) reads its weights pre-packed as [OC/b, IC, KH, KW, b]: `b` output
channels lie next to each other, so the schedule (rules.py) loads them as one SIMD vector and multiplies it by one
broadcast input value. The packing is its own function on the weights alone, which LiftTransformParams moves into
`main_transform_params`; the lowering runs that once at compile time, so the artifact stores packed weights.

A convolution in a blocked layout (layout.py, NCHW[b]c) reads its weights as [O/bo, I/bi, KH, KW, bi, bo].

A 1x1 convolution with stride 1 and no padding whose planes are whole SIMD vectors is a matrix product over the
flattened plane, [N, OC, H*W] = W x [N, IC, H*W]: its accumulators run along the plane, so a tile's write-back is
contiguous vector stores into the NCHW output instead of a transpose of a channels-innermost tile (which cost as
much as the multiply-adds for MobileNetV2's few-channel convs on 112x112 and 56x56 planes).
"""

from __future__ import annotations

CONV_BLOCK = "effc_conv2d_nchw"
POINTWISE_BLOCK = "effc_conv2d_1x1"
PACK_BLOCK = "effc_pack_oihw"
PAD_BLOCK = "effc_pad"
NCHWC_CONV_BLOCK = "effc_conv2d_nchwc"
NCHWC_DEPTHWISE_BLOCK = "effc_depthwise_nchwc"


def output_channel_block(channels: int, lanes: int) -> int:
    """Output channels per packed block: two vectors when they divide the channel count, else one and a half (24
    channels on AVX-512: a half-vector block would use half of every multiply-add), else the largest power of two up
    to one vector that does (1 for odd counts)."""
    for block in (2 * lanes, 3 * lanes // 2, lanes, lanes // 2, lanes // 4, 2):
        if block >= 2 and channels % block == 0:
            return block
    return 1


def _static_ints(values) -> list[int] | None:
    try:
        return [int(v) for v in values]
    except (TypeError, ValueError):
        return None


def legalize_map(lanes: int) -> dict:
    """LegalizeOps overrides for kernels of `lanes` float lanes per vector: relax op name -> legalization function."""
    return {"relax.nn.conv2d": lambda bb, call: _legalize_conv2d(bb, call, lanes)}


def _stock_legalization(op_name: str):
    import tvm

    return tvm.ir.Op.get(op_name).get_attr("FLegalize")


def _blocked(layout: str) -> bool:
    """NCHW[b]c (cpu_layout)."""
    return layout.startswith("NCHW") and layout.endswith("c") and layout[4:-1].isdigit()


def _legalize_conv2d(bb, call, lanes: int):
    attrs = call.attrs
    data, weight = call.args
    if _blocked(str(attrs.out_layout)):
        return _legalize_blocked_conv2d(bb, call)
    data_shape = _static_ints(data.ty.shape.values) if data.ty.shape is not None else None
    weight_shape = _static_ints(weight.ty.shape.values) if weight.ty.shape is not None else None
    plain = (attrs.data_layout == "NCHW" and attrs.kernel_layout == "OIHW" and attrs.out_layout == "NCHW"
             and int(attrs.groups) == 1 and data.ty.dtype == "float32"
             and weight.ty.dtype == "float32" and str(attrs.out_dtype) in ("", "None", "float32", "void")
             and data_shape is not None and weight_shape is not None)
    if not plain:
        return _stock_legalization("relax.nn.conv2d")(bb, call)
    block = output_channel_block(weight_shape[0], lanes)
    packed = bb.emit(bb.call_te(pack_oihw, weight, block, primfunc_name_hint="effc_pack_conv_weight"))
    strides, padding = [int(s) for s in attrs.strides], [int(p) for p in attrs.padding]
    pointwise = weight_shape[2:] == [1, 1] and strides == [1, 1] and not any(padding)
    if pointwise and (data_shape[2] * data_shape[3]) % lanes == 0:
        return bb.call_te(conv2d_1x1_packed, data, packed, weight_shape[0], primfunc_name_hint="effc_conv2d")
    dilation = [int(d) for d in attrs.dilation]
    return bb.call_te(conv2d_nchw_packed, data, packed, strides, padding, dilation, weight_shape[0],
                      primfunc_name_hint="effc_conv2d")


def _legalize_blocked_conv2d(bb, call):
    """A convolution that cpu_layout put into NCHW[b]c, with weights already [O/bo, I/bi, KH, KW, bi, bo]."""
    attrs = call.attrs
    data, weight = call.args
    groups = int(attrs.groups)
    supported = (data.ty.dtype == "float32" and weight.ty.dtype == "float32"
                 and str(attrs.out_dtype) in ("", "None", "float32", "void")
                 and _static_ints(data.ty.shape.values) is not None and _static_ints(weight.ty.shape.values) is not None)
    if not supported:
        raise NotImplementedError(f"effc: blocked conv2d of {data.ty} x {weight.ty}")
    strides, padding = [int(s) for s in attrs.strides], [int(p) for p in attrs.padding]
    dilation = [int(d) for d in attrs.dilation]
    kernel = conv2d_nchwc if groups == 1 else depthwise_conv2d_nchwc
    return bb.call_te(kernel, data, weight, strides, padding, dilation, primfunc_name_hint="effc_conv2d")


def _padded(data, padding):
    """`data` ([N, C, H, W] or [N, C, H, W, b]) zero-padded by (top, left, bottom, right), or itself."""
    from tvm import topi

    top, left, bottom, right = padding
    if not any(padding):
        return data
    lane = [0] * (len(data.shape) - 4)
    return topi.nn.pad(data, [0, 0, top, left, *lane], [0, 0, bottom, right, *lane], name=PAD_BLOCK)


def _window(data, kh: int, kw: int, padding, dilation, strides):
    """(padded data, output height, output width, the kernel's row and column reduce axes) of a KHxKW window."""
    from tvm import te

    height, width = (int(d) for d in data.shape[2:4])
    top, left, bottom, right = padding
    out_h = (height + top + bottom - (kh - 1) * dilation[0] - 1) // strides[0] + 1
    out_w = (width + left + right - (kw - 1) * dilation[1] - 1) // strides[1] + 1
    return _padded(data, padding), out_h, out_w, te.reduce_axis((0, kh), name="ry"), te.reduce_axis((0, kw), name="rx")


def conv2d_nchwc(data, weight, strides, padding, dilation):
    """[N, I/bi, H, W, bi] x [O/bo, I/bi, KH, KW, bi, bo] -> [N, O/bo, OH, OW, bo], or for a first layer with too few
    input channels to block, [N, I, H, W] x [O/bo, I, KH, KW, bo]; padding (top, left, bottom, right)."""
    from tvm import te

    n, in_blocks = (int(d) for d in data.shape[:2])
    out_blocks, _, kh, kw, *blocks = (int(d) for d in weight.shape)
    (sh, sw), (dh, dw) = strides, dilation
    padded, out_h, out_w, ry, rx = _window(data, kh, kw, padding, dilation, strides)
    rc = te.reduce_axis((0, in_blocks), name="rc")
    if len(data.shape) == 4:
        axes = [rc, ry, rx]
        product = lambda b, o, y, x, v: (padded[b, rc, y * sh + ry * dh, x * sw + rx * dw]  # noqa: E731
                                         * weight[o, rc, ry, rx, v])
    else:
        ri = te.reduce_axis((0, blocks[0]), name="ri")
        axes = [rc, ry, rx, ri]
        product = lambda b, o, y, x, v: (padded[b, rc, y * sh + ry * dh, x * sw + rx * dw, ri]  # noqa: E731
                                         * weight[o, rc, ry, rx, ri, v])
    return te.compute((n, out_blocks, out_h, out_w, blocks[-1]), lambda *index: te.sum(product(*index), axis=axes),
                      name=NCHWC_CONV_BLOCK)


def depthwise_conv2d_nchwc(data, weight, strides, padding, dilation):
    """[N, C/b, H, W, b] x [C/b, 1, KH, KW, 1, b] -> [N, C/b, OH, OW, b] (one filter per channel)."""
    from tvm import te

    n, blocks, _, _, block = (int(d) for d in data.shape)
    _, _, kh, kw, _, _ = (int(d) for d in weight.shape)
    (sh, sw), (dh, dw) = strides, dilation
    padded, out_h, out_w, ry, rx = _window(data, kh, kw, padding, dilation, strides)
    return te.compute(
        (n, blocks, out_h, out_w, block),
        lambda b, c, y, x, v: te.sum(padded[b, c, y * sh + ry * dh, x * sw + rx * dw, v] * weight[c, 0, ry, rx, 0, v],
                                     axis=[ry, rx]),
        name=NCHWC_DEPTHWISE_BLOCK)


def pack_oihw(weight, block: int):
    """OIHW -> [O/block, I, H, W, block]."""
    from tvm import te

    o, i, h, w = (int(d) for d in weight.shape)
    return te.compute((o // block, i, h, w, block), lambda a, c, y, x, v: weight[a * block + v, c, y, x],
                      name=PACK_BLOCK)


def conv2d_nchw_packed(data, packed, strides, padding, dilation, out_channels: int):
    """NCHW convolution over pre-packed weights; padding is (top, left, bottom, right)."""
    from tvm import te, topi

    n, in_channels, height, width = (int(d) for d in data.shape)
    _, _, kh, kw, block = (int(d) for d in packed.shape)
    sh, sw = strides
    dh, dw = dilation
    top, left, bottom, right = padding
    if any(padding):
        data = topi.nn.pad(data, [0, 0, top, left], [0, 0, bottom, right], name=PAD_BLOCK)
    out_h = (height + top + bottom - (kh - 1) * dh - 1) // sh + 1
    out_w = (width + left + right - (kw - 1) * dw - 1) // sw + 1
    rc = te.reduce_axis((0, in_channels), name="rc")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    return te.compute(
        (n, out_channels, out_h, out_w),
        lambda b, o, y, x: te.sum(
            data[b, rc, y * sh + ry * dh, x * sw + rx * dw] * packed[o // block, rc, ry, rx, o % block],
            axis=[rc, ry, rx]),
        name=CONV_BLOCK)


def conv2d_1x1_packed(data, packed, out_channels: int):
    """1x1 stride-1 convolution over pre-packed weights, computed on the flattened plane and viewed back as NCHW."""
    from tvm import te

    n, in_channels, height, width = (int(d) for d in data.shape)
    block = int(packed.shape[-1])
    rc = te.reduce_axis((0, in_channels), name="rc")
    flat = te.compute(
        (n, out_channels, height * width),
        lambda b, o, p: te.sum(data[b, rc, p // width, p % width] * packed[o // block, rc, 0, 0, o % block], axis=[rc]),
        name=POINTWISE_BLOCK)
    return te.compute((n, out_channels, height, width), lambda b, o, y, x: flat[b, o, y * width + x],
                      name=f"{POINTWISE_BLOCK}_planes")
