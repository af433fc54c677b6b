"""Which integer kernel a target's convolutions get, and which stay float because it has none.

TVM's own int32 conv2d (what the rewrite emits without a kernel) is a naive loop nest, several times slower than
the float path (ResNet-18 on x86 without VNNI: 336 ms against 14 ms float), so a convolution that neither a dot
kernel of the target's ISA nor the depthwise kernel computes stays float (its weights dequantized at compile
time) and is reported as a float island with the reason.
"""

from __future__ import annotations

from effc.backends.tvm.integer import depthwise, dot
from effc.targets import Target


def isa_name(target: Target) -> str:
    """The target's ISA as a reason names it, e.g. "x86_64 avx2", "aarch64 neon"."""
    return " ".join([target.arch, target.isa.fpu, *target.isa.int8_dot])


def conv_kernels(target: Target):
    """(conv_kernel, float_reason) hooks of `lower_qdq` for `target`: its dot instructions best first, then the
    depthwise kernel."""
    instructions = dot.instructions_for(target.isa)
    kernel = depthwise.first_of(*(dot.conv_kernel(i) for i in instructions), depthwise.conv_kernel)
    reason = f"no integer kernel for {isa_name(target)}"

    def float_reason(kind: str, xq, weight, attrs) -> str | None:
        if kind != "conv2d" or depthwise.fits(xq, weight, attrs):
            return None
        if not instructions:
            return reason
        if any(dot.fits(i, xq, weight, attrs) for i in instructions):
            return None
        limits = [i for i in instructions if i.max_weight is not None]
        if limits and int(attrs.groups) == 1 and str(xq.ty.dtype) == limits[0].data_dtype:
            return f"{reason}: weights beyond ±{limits[0].max_weight} would saturate `{limits[0].key}`"
        return f"{reason} ({xq.ty.dtype} activations, {int(attrs.groups)} groups)"

    return kernel, float_reason


def blocked_kernels(target: Target):
    """The `blocked_kernel` hook of `lower_qdq` for `target`: its dot instructions best first (their accumulators,
    one pixel's vector, are the blocks), then the blocked depthwise kernel; None where the best instruction
    computes several pixels at once (i8mm `smmla`: its tile is not one pixel's vector, it keeps the NCHW kernel)."""
    instructions = dot.instructions_for(target.isa)
    if not instructions or instructions[0].pixels != 1:
        return None
    return depthwise.first_of(*(dot.blocked_conv_kernel(i) for i in instructions if i.pixels == 1),
                              depthwise.blocked_conv_kernel)
