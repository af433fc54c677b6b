"""Blocked activation layouts for CPU convolutions: NCHW[b]c, b channels innermost (one SIMD vector).

In NCHW a convolution's SIMD vectors run along an image row, so a plane of 14x14 or 7x7 fills its vectors badly and
a tile of output channels is written back by transposing it. With `b` channels innermost (as ONNX Runtime's NCHWc
kernels do), a vector is `b` channels of one pixel: every tile writes whole vectors, every input pixel is one
contiguous load, whatever the plane's size. TVM's ConvertLayout rewrites each convolution into the blocked layout
and carries the layout through the elementwise ops between them (bias, activation, residual add), so a network
converts its activations once at its first blocked convolution and back once before its first op that needs NCHW.

Blocked are dense convolutions (groups 1) and depthwise ones whose channel counts are multiples of a block of at
least half a vector; a dense convolution with fewer input channels (a first layer's 3) reads NCHW and writes blocks;
other convolutions (grouped ones) stay NCHW. When TVM's ConvertLayout cannot carry the blocked layout through the
network (an op after a convolution whose layout inference it lacks or gets wrong: ShuffleNet's channel-shuffle
reshapes, AlexNet's LRN), the convolutions feeding such ops stay NCHW and the others are blocked.
"""

from __future__ import annotations

CONV2D = "relax.nn.conv2d"


def channel_block(channels: int, lanes: int) -> int | None:
    """Channels per block: a vector, else half a vector (24 channels on AVX-512), when it divides `channels`."""
    for block in (lanes, lanes // 2):
        if block >= 4 and channels % block == 0:
            return block
    return None


def conv2d_layouts(call, lanes: int) -> dict:
    """ConvertLayout's choice for one call: {op: [data, kernel, output layout]}, or {} to leave it as it is."""
    op = getattr(call.op, "name", None)
    if op != CONV2D or call.attrs.data_layout != "NCHW" or call.attrs.kernel_layout != "OIHW":
        return {}
    weight = call.args[1].ty
    if weight.shape is None or call.args[0].ty.dtype != "float32":
        return {}
    try:
        out_channels, per_group = (int(d) for d in weight.shape.values[:2])
    except (TypeError, ValueError):  # symbolic channel counts
        return {}
    groups = int(call.attrs.groups)
    in_channels = per_group * groups
    data_block, out_block = channel_block(in_channels, lanes), channel_block(out_channels, lanes)
    if out_block is None:
        return {}
    if data_block is None:  # a first layer (3 input channels) reads NCHW and writes blocks
        return {CONV2D: ["NCHW", f"OIHW{out_block}o", f"NCHW{out_block}c"]} if groups == 1 else {}
    if groups == 1:
        return {CONV2D: [f"NCHW{data_block}c", f"OIHW{data_block}i{out_block}o", f"NCHW{out_block}c"]}
    if groups == in_channels == out_channels:
        return {CONV2D: [f"NCHW{out_block}c", f"OIHW1i{out_block}o", f"NCHW{out_block}c"]}
    return {}


def convert_layout_pass(lanes: int):
    """The Relax pass that puts convolutions (and what lies between them) into blocked layouts for `lanes`-wide SIMD,
    leaving in NCHW the convolutions ConvertLayout fails on."""
    import tvm
    from tvm import relax

    def convert(mod, blocked: set[tuple] | None):
        def choose(call):
            layouts = conv2d_layouts(call, lanes)
            if layouts and (blocked is None or _conv_key(call) in blocked):
                return layouts
            if getattr(call.op, "name", None) == CONV2D and call.attrs.data_layout == "NCHW":
                # {} would let the conv take its input's blocked layout, which a grouped conv cannot
                return {CONV2D: ["NCHW", "OIHW", "NCHW"]}
            return {}
        return relax.transform.ConvertLayout({}, layout_cb=choose)(mod)

    @tvm.transform.module_pass(opt_level=0, name="BlockedConvLayouts")
    def blocked_or_nchw(mod, _ctx):
        try:
            return convert(mod, None)
        except Exception:  # TVM raises InternalError, ValueError, ... from its layout inference
            pass
        return _largest_convertible(mod, [_conv_key(c) for c in _conv_calls(mod, lanes)], convert)

    return blocked_or_nchw


def _conv_key(call) -> tuple:
    # the weight (a parameter of its own per conv after import) identifies a conv across ConvertLayout's rewrites
    weight = call.args[1]
    return (getattr(weight, "name", None) or str(weight), str(weight.ty.shape), str(call.attrs.strides))


def _conv_calls(mod, lanes: int) -> list:
    from tvm import relax

    calls = []
    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func.body, lambda e: calls.append(e) if isinstance(e, relax.Call)
                                            and conv2d_layouts(e, lanes) else None)
    return calls


MAX_LAYOUT_ATTEMPTS = 48  # ConvertLayout runs of the fallback search (a few tenths of a second each on ShuffleNet)


def _largest_convertible(mod, keys: list[tuple], convert):
    """Block as many convolutions as ConvertLayout accepts: binary search for the longest prefix (in program order) it
    converts, keep that conv NCHW after it (the one feeding the op it fails on), and search again from the next one,
    until the convolutions or the attempts run out; the convolutions left out stay NCHW."""
    attempts = 0

    def attempt(chosen: list[tuple]):
        nonlocal attempts
        attempts += 1
        try:
            return convert(mod, set(chosen))
        except Exception:  # TVM raises InternalError, ValueError, ... from its layout inference
            return None

    blocked: list[tuple] = []
    good, rest = mod, list(keys)
    while rest and attempts < MAX_LAYOUT_ATTEMPTS:
        low, high, found = 0, len(rest), None
        while low < high and attempts < MAX_LAYOUT_ATTEMPTS:
            mid = (low + high + 1) // 2
            converted = attempt(blocked + rest[:mid])
            if converted is None:
                high = mid - 1
            else:
                low, found = mid, converted
        if found is not None:
            good, blocked = found, blocked + rest[:low]
        rest = rest[low + 1:]
    return good
