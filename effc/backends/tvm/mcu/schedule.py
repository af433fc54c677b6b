"""Schedules for microcontroller kernels: no intermediate buffer larger than a few accumulators.

An unscheduled fused kernel keeps every stage's full-size result (the padded input, the conv's accumulators, each
epilogue step); in C those are stack arrays (or TVMBackendAllocWorkspace). Here every injective stage is inlined
into its consumer (padding into the conv reads, elementwise steps into one another), the remaining epilogue is
computed inside the reduction's spatial loops (its accumulator shrinks to one element, kept in a register by
gcc), and the reduction's init is moved out of its reduction loops.
"""

from __future__ import annotations

import contextlib

COMM_REDUCE = 2  # tirx.IterVar.CommReduce


def _root_blocks(sch) -> list:
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def _reduction_iters(sch, block) -> list[bool]:
    return [int(iv.iter_type) == COMM_REDUCE for iv in sch.get(block).iter_vars]


def _inline_injective(sch, keep=()) -> None:
    """Inline every non-reduction block but those named in `keep` into its consumers (or, for an output block,
    its producer) until none is left that can go."""
    from tvm.s_tir.schedule import ScheduleError

    changed = True
    while changed:
        changed = False
        for block in _root_blocks(sch):
            if any(_reduction_iters(sch, block)) or sch.get(block).name_hint in keep:
                continue
            for inline in (sch.compute_inline, sch.reverse_compute_inline):
                try:
                    inline(block)
                except ScheduleError:  # an output block, or a producer that is a reduction: try the other way
                    continue
                changed = True
                break


def _epilogue_into_reduction(sch, reduction) -> None:
    """Compute the reduction's single elementwise consumer inside its spatial loops, so the accumulator is one
    element; then move the init out of the reduction loops."""
    from tvm.s_tir.schedule import ScheduleError

    loops = sch.get_loops(reduction)
    flags = _reduction_iters(sch, reduction)
    spatial = flags.index(True) if True in flags else len(flags)
    # The loop nest follows the block's iter vars (LegalizeOps writes spatial first, then reduction).
    consumers = sch.get_consumers(reduction)
    if len(consumers) == 1 and spatial > 0 and len(loops) == len(flags):
        # A consumer reading more than the spatial point (a transpose, a reshape) stays after the whole reduction.
        with contextlib.suppress(ScheduleError):
            sch.reverse_compute_at(consumers[0], loops[spatial - 1], preserve_unit_loops=True)
    # TVM's C codegen names a repeated max/min operand once per scope, so an unrolled max pool would read a stale
    # accumulator: only convolution windows (sums) are unrolled.
    window = _window_only(sch, reduction) and "conv" in sch.get(reduction).name_hint
    if spatial < len(loops):
        sch.decompose_reduction(reduction, sch.get_loops(reduction)[spatial])
    if window:  # a depthwise window (3x3, 5x5): unrolled, its taps become constant offsets
        for loop in sch.get_loops(reduction)[spatial:]:
            sch.unroll(loop)


def _blocked_matmul(sch, matmul) -> bool:
    """[M, K] x [K, N]: four (or two) outputs of a row per pass over k, their accumulators unrolled into registers
    and the weight row read contiguously. False (nothing changed) for any other shape of block."""
    flags = _reduction_iters(sch, matmul)
    loops = sch.get_loops(matmul)
    if flags != [False, False, True] or len(loops) != 3:
        return False
    i, j, k = loops
    extent = sch.get(j).extent
    if not hasattr(extent, "value"):
        return False
    channels = next((c for c in (4, 2) if int(extent.value) % c == 0), None)
    if channels is None:
        return False
    blocks, block = sch.split(j, [None, channels])
    sch.reorder(i, blocks, k, block)
    for consumer in sch.get_consumers(matmul):
        sch.reverse_compute_at(consumer, blocks)
    sch.decompose_reduction(matmul, k)
    sch.unroll(block)
    return True


def schedule_kernel(func):
    """`func` (a fused PrimFunc from Relax) scheduled for a microcontroller (see the module docstring)."""
    import tvm

    from effc.backends.tvm.mcu import dsp, float_conv

    sch = tvm.s_tir.Schedule(func)
    names = {sch.get(b).name_hint for b in _root_blocks(sch)}
    if dsp.CONV_BLOCK in names:
        _inline_injective(sch, keep=(dsp.COL_BLOCK,))
        dsp.schedule_dsp_conv(sch, sch.get_sblock(dsp.CONV_BLOCK))
        return sch.mod["main"].with_attr("tirx.is_scheduled", True)
    if float_conv.CONV_BLOCK in names:
        _inline_injective(sch, keep=(float_conv.COL_BLOCK,))
        float_conv.schedule_im2col_conv(sch, sch.get_sblock(float_conv.CONV_BLOCK))
        return sch.mod["main"].with_attr("tirx.is_scheduled", True)
    if dsp.DENSE_BLOCK in names:
        _inline_injective(sch)
        dsp.schedule_dsp_dense(sch, sch.get_sblock(dsp.DENSE_BLOCK))
        return sch.mod["main"].with_attr("tirx.is_scheduled", True)
    planes = _window_inputs(sch)
    _inline_injective(sch, keep=tuple(planes))
    for name, reduction in planes.items():
        sch.compute_at(sch.get_sblock(name), sch.get_loops(sch.get_sblock(reduction))[1])
    for block in _root_blocks(sch):
        if any(_reduction_iters(sch, block)):
            if sch.get(block).name_hint.startswith("matmul") and _blocked_matmul(sch, block):
                continue
            _epilogue_into_reduction(sch, block)
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def _window_only(sch, block) -> bool:
    """Whether `block` is an NCHW reduction over a KH x KW window only: S S S S R R, or S S S S R R R with one
    input channel per group (a depthwise convolution as Relax or integer_conv.py writes it)."""
    flags = _reduction_iters(sch, block)
    if flags[:4] != [False] * 4 or not all(flags[4:]) or len(flags) not in (6, 7):
        return False
    if len(flags) == 6:
        return True
    extent = sch.get(block).iter_vars[4].dom.extent
    return hasattr(extent, "value") and int(extent.value) == 1


def _window_inputs(sch) -> dict[str, str]:
    """{padding block: the depthwise convolution reading it}: a reduction over the window only (_window_only)
    reads its padded input one channel plane at a time, so the padding is built per plane (a stack
    array of one padded plane) instead of checked on every tap."""
    found = {}
    for block in _root_blocks(sch):
        if not _window_only(sch, block):
            continue
        for producer in sch.get_producers(block):
            if not any(_reduction_iters(sch, producer)):
                found[sch.get(producer).name_hint] = sch.get(block).name_hint
    return found


def accumulates_integers(func) -> bool:
    """Whether `func`'s reductions (its conv/matmul) accumulate in an integer type: integer arithmetic."""
    import tvm

    sch = tvm.s_tir.Schedule(func)
    found = False
    for block in _root_blocks(sch):
        if any(_reduction_iters(sch, block)):
            dtypes = {str(region.source.dtype) for region in sch.get(block).writes}
            if not all(d.startswith(("int", "uint")) for d in dtypes):
                return False
            found = True
    return found


def kernel_anchor(name: str, anchors) -> str | None:
    """The first op of a kernel's name (fused_conv2d1_add2 -> conv2d) that is a key of `anchors`."""
    import re

    tokens = re.sub(r"^fused_", "", name).split("_")
    for k in range(len(tokens)):
        for width in (3, 2, 1):
            candidate = re.sub(r"\d+$", "", "_".join(tokens[k:k + width]))
            if candidate in anchors:
                return candidate
    return None
