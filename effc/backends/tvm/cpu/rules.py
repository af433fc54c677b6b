"""Default CPU schedules, chosen per fused PrimFunc without any search: dlight-style rules (the CPU counterpart of
dlight's GPU rules), applied through TVM's own `dlight.ApplyDefaultSchedule`.

Each rule looks for the one heavy block of a function (a convolution over pre-packed weights, a matmul, a
depthwise/grouped convolution), tiles it into a register block of SIMD accumulators, parallelizes the outer
loops over cores and folds the function's elementwise epilogue (bias, activation, residual add) into the write
of each tile. What no rule claims gets the generic schedule: inlined elementwise producers, parallel outer
loops, vectorized inner loops. The tile sizes follow from the target record's ISA (`isa.lanes()` float lanes per
vector, `isa.vector_registers`: AVX-512 16 lanes and 32 registers, AVX2 8 and 16, NEON 4 and 32).

The rules, first match wins (`RULES`):
- `blocked-conv`: a register tile of R pixels of an output row x V channel blocks (NCHW[b]c): per input channel V
  vector loads of weights and R broadcasts; whole-vector write-back with the fused epilogue folded in; the padded
  input rows an output row reads are built right before it, in cache. Among tiles with as many accumulators, the
  one with the fewest loads per step.
- `blocked-depthwise`: R pixels of one channel block: per tap one weight vector and R contiguous input vectors,
  strided or not.
- for convolutions that stay NCHW (channel counts no block divides, grouped convs): `pointwise-conv` (a 1x1
  stride-1 conv whose plane is whole vectors, over the flattened plane, in L2-sized chunks), `packed-conv`
  (R output columns x b channels), `grouped-conv` (each channel's padded plane built in cache, vectors along the
  row, or unrolled scalar rows when the stride makes a vector load a gather).
- `matmul`: R rows x vectors along N; with few rows the tile widens along N so each step streams whole cache lines.
- `generic`: inline elementwise producers, parallel outer loops, vectorized inner loop; reductions keep their two
  inner spatial loops (when the outer loops give the cores enough work) and unroll windows of up to 64 steps.

An NCHW block of 24 channels (1.5 AVX-512 vectors) is three 8-lane vectors: LLVM spills a <24 x float> accumulator.
Loops run in parallel only when the nest has more work than waking the thread pool costs. A schedule function
raises RuleMismatch (or a ScheduleError) when a function does not have the shape it expects; its rule then returns
None and the next rule is tried. The rule that scheduled a kernel is recorded as its `effc.schedule_rule` attribute.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir import dlight

from effc.backends.tvm.cpu.kernels import (
    CONV_BLOCK,
    NCHWC_CONV_BLOCK,
    NCHWC_DEPTHWISE_BLOCK,
    PAD_BLOCK,
    POINTWISE_BLOCK,
)
from effc.targets import ISA

RULE_ATTR = "effc.schedule_rule"

# Waking the thread pool costs a few microseconds: a loop nest runs in parallel only when it has more work than
# that, in multiply-adds (about 5 us on one core here) or, for elementwise loops, in elements.
PARALLEL_MIN_MACS = 1 << 18
PARALLEL_MIN_ELEMENTS = 1 << 14
# registers a conv tile leaves free of accumulators (weights, broadcasts, addresses): fewer spilled here
TILE_SPARE_REGISTERS = 8
# ... and a tile with few loads per step (a whole output row, a depthwise tap, a matmul row block) leaves this many
MIN_SPARE_REGISTERS = 4
SMALL_REDUCTION = 64  # a reduction of at most this many steps per output is unrolled
# A 1x1 convolution walks its plane in chunks whose input columns (all input channels) stay in L2 while every block
# of output channels passes over them; 64 KiB beat 256 KiB and unchunked orders on MobileNetV2's 112x112 planes.
POINTWISE_CHUNK_BYTES = 64 * 1024


class RuleMismatch(Exception):
    """The function is not what the rule schedules."""


class CPURule(dlight.ScheduleRule):
    """One of effc's CPU schedules as a dlight rule, its tiles sized for `isa`: `apply` returns the Schedule of a
    function it schedules (marked with its name in `effc.schedule_rule`), None for any other function."""

    def __init__(self, name: str, schedule, isa: ISA):
        self.name, self.schedule = name, schedule
        self.lanes, self.registers = isa.lanes(), isa.vector_registers

    def apply(self, func, target, tunable):
        if not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func.with_attr(RULE_ATTR, self.name))
        try:
            self.schedule(sch, self.lanes, self.registers)
        except (RuleMismatch, s_tir.ScheduleError):
            return None
        return sch

    def __repr__(self) -> str:
        return f"<CPURule {self.name}>"


def cpu_rules(isa: ISA) -> list[CPURule]:
    """effc's CPU rule set for `isa`, in the order they are tried."""
    return [CPURule(name, schedule, isa) for name, schedule in RULES]


def choose_schedule(func, isa: ISA):
    """(rule name, Schedule) of the first rule that schedules `func` for `isa`, or (None, None)."""
    for rule in cpu_rules(isa):
        sch = rule.apply(func, None, False)
        if sch is not None:
            return rule.name, sch
    return None, None


def default_schedule(func, isa: ISA):
    """A Schedule of `func` for `isa` (tvm.s_tir.Schedule), or None when no rule applies."""
    return choose_schedule(func, isa)[1]


def schedule_pass(isa: ISA):
    """A module pass: every PrimFunc not marked `tirx.is_scheduled` (by a tuning database) gets the first rule that
    fits, through dlight's ApplyDefaultSchedule (which marks it)."""
    return dlight.ApplyDefaultSchedule(*cpu_rules(isa))


# ----------------------------------------------------------------------------------------------- helpers
def _root_blocks(sch):
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def _blocks_named(sch, prefix: str) -> list:
    return [b for b in _root_blocks(sch) if _name(sch, b).startswith(prefix)]


def _name(sch, block) -> str:
    return sch.get(block).name_hint


def _find(sch, predicate):
    found = [b for b in _root_blocks(sch) if predicate(_name(sch, b))]
    if len(found) != 1:
        raise RuleMismatch
    return found[0]


def _extents(sch, loops) -> list[int]:
    extents = []
    for loop in loops:
        extent = sch.get(loop).extent
        if not hasattr(extent, "value"):
            raise RuleMismatch  # symbolic extent
        extents.append(int(extent.value))
    return extents


def _is_reduction(sch, block) -> list[bool]:
    return [int(iv.iter_type) == 2 for iv in sch.get(block).iter_vars]  # IterVar.CommReduce


def _inline_elementwise(sch, keep) -> None:
    """Inline every producer that feeds exactly one consumer, except the blocks in `keep`."""
    kept = {_name(sch, b) for b in keep}
    changed = True
    while changed:
        changed = False
        for block in _root_blocks(sch):
            if _name(sch, block) in kept or any(_is_reduction(sch, block)):
                continue
            if len(sch.get_consumers(block)) != 1:
                continue
            try:
                sch.compute_inline(block)
                changed = True
            except Exception:  # an output block, or not inlinable: leave it
                continue


def _fold_epilogue(sch, writer, lanes: int) -> None:
    """Fold the elementwise consumers of `writer` (a tile's write-back) into it. Any other consumer (a reshape or
    transpose fused after the kernel) runs after the whole kernel, scheduled generically: computing it per tile
    would let it read outside the tile, since TVM bounds a tile's region by a rectangle."""
    for consumer in sch.get_consumers(writer):
        try:
            sch.reverse_compute_inline(consumer)
        except Exception:  # not elementwise over the tile
            _schedule_block_generic(sch, consumer, lanes)


def _largest_divisor(n: int, limit: int) -> int:
    return max(d for d in range(1, max(1, min(n, limit)) + 1) if n % d == 0)


def _vector_width(block: int, lanes: int) -> int:
    """Lanes per vector for a block of `block` values: a power of two up to a register (a 24-wide block is three
    8-lane vectors: LLVM spills a <24 x float> accumulator)."""
    return min(lanes, block & -block)


def _vector_block(n: int, lanes: int) -> int:
    for block in (2 * lanes, lanes, lanes // 2, lanes // 4, 2):
        if block >= 2 and n % block == 0:
            return block
    raise RuleMismatch


def _parallel_outer(sch, loops, macs: int) -> None:
    if not loops:
        return
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    if macs >= PARALLEL_MIN_MACS:
        sch.parallel(fused)


def _schedule_pad(sch, pad) -> None:
    loops = sch.get_loops(pad)
    extents = _extents(sch, loops)
    fused = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
    if _product(extents) >= PARALLEL_MIN_ELEMENTS:
        sch.parallel(fused)


def _product(values) -> int:
    total = 1
    for v in values:
        total *= v
    return total


# ------------------------------------------------------------------------------------------------- rules
def _schedule_packed_conv(sch, lanes: int, registers: int) -> None:
    """conv over [OC/b, IC, KH, KW, b] weights: a tile of R output columns x b output channels in registers;
    per (ic, ky, kx) one vector load of b weights and R broadcast inputs."""
    conv = _find(sch, lambda name: name.startswith(CONV_BLOCK))
    pads = _blocks_named(sch, PAD_BLOCK)
    packed = next(r.source for r in sch.get(conv).reads if len(r.source.shape) == 5)
    block = int(packed.shape[-1])
    _inline_elementwise(sch, keep=[conv, *pads])
    n, o, y, x, rc, ry, rx = sch.get_loops(conv)
    n_, oc, oh, ow, ic, kh, kw = _extents(sch, [n, o, y, x, rc, ry, rx])
    width = _vector_width(block, lanes)
    vectors = block // width
    columns = _largest_divisor(ow, max(1, (registers - TILE_SPARE_REGISTERS) // vectors))
    o_outer, o_inner = sch.split(o, [None, block])
    x_outer, x_inner = sch.split(x, [None, columns])
    sch.reorder(n, o_outer, y, x_outer, rc, ry, rx, x_inner, o_inner)
    if vectors > 1 and width < lanes:
        o_vector, o_inner = sch.split(o_inner, [None, width])
        sch.unroll(o_vector)
    writer = sch.cache_write(conv, 0, "local")
    # the accumulators, channels innermost, so that each is one SIMD register
    sch.transform_layout(conv, ("write", 0), lambda b, c, h, w: (b, h, w, c))
    sch.reverse_compute_at(writer, x_outer)
    _fold_epilogue(sch, writer, lanes)
    _parallel_outer(sch, [n, o_outer, y], n_ * oc * oh * ow * ic * kh * kw)
    sch.vectorize(o_inner)
    sch.unroll(x_inner)
    sch.vectorize(sch.get_loops(writer)[-1])  # the tile's write-back and epilogue, along the output row
    sch.decompose_reduction(conv, rc)
    for pad in pads:
        _schedule_pad(sch, pad)


def _schedule_blocked_conv(sch, lanes: int, registers: int) -> None:
    """conv in NCHW[b]c (cpu_kernels.conv2d_nchwc): a tile of R output pixels of a row x V output channel blocks in
    registers; per input channel one vector load of each block's weights and R broadcast inputs, contiguous in
    memory; the tile is written back as whole vectors."""
    conv = _find(sch, lambda name: name == NCHWC_CONV_BLOCK)
    pads = _blocks_named(sch, PAD_BLOCK)
    _inline_elementwise(sch, keep=[conv, *pads])
    n, o, y, x, v, *reduction = sch.get_loops(conv)  # (rc, ry, rx, ri) or, reading NCHW, (rc, ry, rx)
    n_, blocks, oh, ow, block = _extents(sch, [n, o, y, x, v])
    vectors, columns = _blocked_tile(blocks, ow, registers - TILE_SPARE_REGISTERS)
    # a tile that holds a whole output row may take more accumulators (measured: ResNet-18's 14x14 and 7x7 layers
    # faster, its 28- and 56-wide rows, split into tiles, slower)
    wide = _blocked_tile(blocks, ow, registers - MIN_SPARE_REGISTERS)
    if wide[1] == ow and wide[0] * wide[1] > vectors * columns:
        vectors, columns = wide
    o_outer, o_inner = sch.split(o, [None, vectors])
    x_outer, x_inner = sch.split(x, [None, columns])
    sch.reorder(n, o_outer, y, x_outer, *reduction, x_inner, o_inner, v)
    writer = sch.cache_write(conv, 0, "local")
    sch.reverse_compute_at(writer, x_outer)
    _fold_epilogue(sch, writer, lanes)
    _pad_rows_at(sch, pads, y)
    _parallel_outer(sch, [n, o_outer, y], n_ * blocks * oh * ow * block * _product(_extents(sch, reduction)))
    sch.vectorize(v)
    sch.unroll(o_inner)
    sch.unroll(x_inner)
    _unroll_tile_writer(sch, writer, x_outer)
    sch.decompose_reduction(conv, reduction[0])


def _blocked_tile(blocks: int, width: int, budget: int) -> tuple[int, int]:
    """(channel blocks, columns) of the tile with the most accumulators within `budget` registers: the columns
    divide the output row; among equals the one with the fewest loads per step (blocks + columns: 4x4, not 1x16)."""
    tiles = [(vb, _largest_divisor(width, max(1, budget // vb))) for vb in (1, 2, 3, 4) if blocks % vb == 0]
    return max(tiles, key=lambda t: (t[0] * t[1], -(t[0] + t[1])))


def _schedule_blocked_depthwise(sch, lanes: int, registers: int) -> None:
    """depthwise conv in NCHW[b]c (cpu_kernels.depthwise_conv2d_nchwc): R output pixels of a row of one channel
    block in registers; per tap one vector of weights and R vectors of input pixels (strided or not, each a
    contiguous load)."""
    conv = _find(sch, lambda name: name == NCHWC_DEPTHWISE_BLOCK)
    pads = _blocks_named(sch, PAD_BLOCK)
    _inline_elementwise(sch, keep=[conv, *pads])
    n, c, y, x, v, ry, rx = sch.get_loops(conv)
    n_, blocks, oh, ow, block, kh, kw = _extents(sch, [n, c, y, x, v, ry, rx])
    columns = _largest_divisor(ow, max(1, (registers - MIN_SPARE_REGISTERS) // 2))
    x_outer, x_inner = sch.split(x, [None, columns])
    sch.reorder(n, c, y, x_outer, ry, rx, x_inner, v)
    writer = sch.cache_write(conv, 0, "local")
    sch.reverse_compute_at(writer, x_outer)
    _fold_epilogue(sch, writer, lanes)
    _pad_rows_at(sch, pads, y)
    _parallel_outer(sch, [n, c, y], n_ * blocks * oh * ow * block * kh * kw)
    sch.vectorize(v)
    sch.unroll(x_inner)
    sch.unroll(ry)
    sch.unroll(rx)
    _unroll_tile_writer(sch, writer, x_outer)
    sch.decompose_reduction(conv, ry)


def _pad_rows_at(sch, pads, row) -> None:
    """Pad the input rows each output row reads right before it (in cache), as whole channel vectors: no padded copy
    of the whole input goes through memory."""
    for pad in pads:
        sch.compute_at(pad, row)
        sch.vectorize(sch.get_loops(pad)[-1])


def _unroll_tile_writer(sch, writer, anchor) -> None:
    """A blocked tile's write-back (its loops below `anchor`): vectors along the channel block, the other loops
    unrolled (a loop over the tile would index the accumulators and keep them out of registers)."""
    loops = sch.get_loops(writer)
    depth = next(i for i, loop in enumerate(loops) if sch.get_sref(loop).same_as(sch.get_sref(anchor)))
    if depth + 1 == len(loops):  # a tile one element wide (a row width with no divisor up to the lanes): no loop
        return
    *tile, lane = loops[depth + 1:]
    sch.vectorize(lane)
    for loop in tile:
        sch.unroll(loop)


def _schedule_pointwise_conv(sch, lanes: int, registers: int) -> None:
    """1x1 conv over the flattened plane (cpu_kernels.conv2d_1x1_packed): a tile of R output channels x V vectors
    along the plane in registers; per input channel V vector loads and R broadcast weights. The plane goes in chunks
    (POINTWISE_CHUNK_BYTES), each chunk through every channel block, so that a tile writes R contiguous runs."""
    conv = _find(sch, lambda name: name == POINTWISE_BLOCK)
    _inline_elementwise(sch, keep=[conv])
    n, o, p, rc = sch.get_loops(conv)
    n_, channels, plane, in_channels = _extents(sch, [n, o, p, rc])
    if plane % lanes:
        raise RuleMismatch
    vectors = _largest_divisor(plane // lanes, 4)
    rows = _largest_divisor(channels, max(1, (registers - vectors - 2) // vectors))
    tiles = plane // (vectors * lanes)
    chunk = _largest_divisor(tiles, max(1, POINTWISE_CHUNK_BYTES // (in_channels * vectors * lanes * 4)))
    o_outer, o_inner = sch.split(o, [None, rows])
    p_chunk, p_outer, p_vector, p_inner = sch.split(p, [None, chunk, vectors, lanes])
    sch.reorder(n, p_chunk, o_outer, p_outer, rc, o_inner, p_vector, p_inner)
    writer = sch.cache_write(conv, 0, "local")
    sch.reverse_compute_at(writer, p_outer)
    _fold_epilogue(sch, writer, lanes)
    _parallel_outer(sch, [n, p_chunk, o_outer, p_outer], n_ * channels * plane * in_channels)
    sch.vectorize(p_inner)
    sch.unroll(p_vector)
    sch.unroll(o_inner)
    # the write-back unrolled too: a loop over the tile would index the accumulators and keep them out of registers
    channel, column = sch.get_loops(writer)[-2:]
    column_vector, column_inner = sch.split(column, [None, lanes])
    sch.vectorize(column_inner)
    sch.unroll(column_vector)
    sch.unroll(channel)
    sch.decompose_reduction(conv, rc)


def _schedule_matmul(sch, lanes: int, registers: int) -> None:
    """matmul [..., M, K] x [..., K, N]: a tile of R rows x b columns in registers, vectors along N."""
    mm = _find(sch, lambda name: name == "matmul" or name.startswith(("T_matmul", "T_batch_matmul", "matmul")))
    reduction = _is_reduction(sch, mm)
    if reduction[-1] is not True or any(reduction[:-1]) or len(reduction) < 3:
        raise RuleMismatch
    j_var = sch.get(mm).iter_vars[-2].var
    if not any(str(r.region[-1].min) == str(j_var) for r in sch.get(mm).reads):
        raise RuleMismatch  # no operand is contiguous along the output columns
    _inline_elementwise(sch, keep=[mm])
    loops = sch.get_loops(mm)
    *batch, i, j, k = loops
    extents = _extents(sch, loops)
    rows, cols = extents[-3], extents[-2]
    block = _vector_block(cols, lanes)
    vectors = max(1, block // lanes)
    tile_rows = _largest_divisor(rows, max(1, (registers - MIN_SPARE_REGISTERS) // vectors))
    # Few rows (a matrix-vector product): widen the tile along the columns, so that each step of k reads a long
    # contiguous run of the weight row rather than a few bytes of every cache line, twice.
    width = _vector_width(block, lanes)
    budget = ((registers - MIN_SPARE_REGISTERS) // tile_rows) * width
    block = max(d for d in range(block, min(cols, budget) + 1, block) if cols % d == 0) if budget > block else block
    i_outer, i_inner = sch.split(i, [None, tile_rows])
    j_outer, j_inner = sch.split(j, [None, block])
    sch.reorder(*batch, i_outer, j_outer, k, i_inner, j_inner)
    if block > width:
        j_vector, j_inner = sch.split(j_inner, [None, width])
        sch.unroll(j_vector)
    writer = sch.cache_write(mm, 0, "local")
    sch.reverse_compute_at(writer, j_outer)
    _fold_epilogue(sch, writer, lanes)
    _parallel_outer(sch, [*batch, i_outer, j_outer], _product(extents))
    sch.vectorize(j_inner)
    sch.unroll(i_inner)
    sch.vectorize(sch.get_loops(writer)[-1])
    sch.decompose_reduction(mm, k)


def _row_tile(width: int, lanes: int) -> int:
    """Output columns per vector in a row-vectorized kernel: a power of two of at least 4 that divides the row (LLVM
    splits odd widths into several partial vectors), else the whole row when it fits one vector."""
    for tile in (lanes, lanes // 2, lanes // 4):
        if tile >= 4 and width % tile == 0:
            return tile
    return width if width <= lanes else _largest_divisor(width, lanes)


def _schedule_grouped_conv(sch, lanes: int, registers: int) -> None:
    """TVM's grouped/depthwise NCHW conv: per channel, its padded plane is built in cache right before use; vectors
    along the output row (unrolled scalar code for a strided row), one broadcast weight per tap."""
    conv = _find(sch, lambda name: name.startswith(("group_conv2d_nchw", "depthwise_conv2d_nchw")))
    pads = _blocks_named(sch, "pad_temp")
    _inline_elementwise(sch, keep=[conv, *pads])
    loops = sch.get_loops(conv)
    if len(loops) != 7:
        raise RuleMismatch
    n, c, y, x, rc, ry, rx = loops
    n_, channels, oh, ow, per_group, kh, kw = _extents(sch, loops)
    # A strided row is no vector load (a gather, or a chain of shuffles): those rows are unrolled scalar code, as
    # MetaSchedule's best candidates do it (stride-2 depthwise kernels of MobileNetV2 2x faster than vectorized)
    strided = any(_column_stride(sch, conv, pad) > 1 for pad in pads)
    x_outer, x_inner = sch.split(x, [None, _largest_divisor(ow, 32) if strided else _row_tile(ow, lanes)])
    sch.reorder(n, c, y, x_outer, rc, ry, rx, x_inner)
    writer = sch.cache_write(conv, 0, "local")
    sch.reverse_compute_at(writer, x_outer)
    _fold_epilogue(sch, writer, lanes)
    plane = sch.fuse(n, c)
    if n_ * channels * oh * ow * per_group * kh * kw >= PARALLEL_MIN_MACS:
        sch.parallel(plane)
    for pad in pads:
        sch.compute_at(pad, plane)
    if strided:
        sch.unroll(x_inner)
    else:
        sch.vectorize(x_inner)
    sch.unroll(ry)
    sch.unroll(rx)
    # the write-back stays a scalar loop: vectorized, the AArch64 build gave wrong numbers under qemu (cause not found)
    sch.decompose_reduction(conv, rc)


def _column_stride(sch, conv, pad) -> int:
    """The stride with which `conv` reads the columns of `pad`'s buffer (1 when it cannot tell)."""
    from tvm import sym

    buffer = sch.get(pad).writes[0].source
    read = next((r for r in sch.get(conv).reads if r.source.same_as(buffer)), None)
    if read is None:
        return 1
    linear = sym.detect_linear_equation(read.region[-1].min, [sch.get(conv).iter_vars[3].var])
    return int(linear[0].value) if len(linear) == 2 and hasattr(linear[0], "value") else 1


def _schedule_generic(sch, lanes: int, registers: int) -> None:
    """Inline elementwise producers; parallel outer loops; vectorize the inner loop of purely spatial blocks."""
    _inline_elementwise(sch, keep=[])
    for block in _root_blocks(sch):
        _schedule_block_generic(sch, block, lanes)


def _schedule_block_generic(sch, block, lanes: int) -> None:
    loops = sch.get_loops(block)
    if not loops:
        return
    try:
        extents = _extents(sch, loops)
    except RuleMismatch:
        return
    reduction = _is_reduction(sch, block)
    if len(reduction) != len(loops):
        return  # loops and iteration variables do not line up one to one
    spatial = 0
    while spatial < len(loops) and not reduction[spatial]:
        spatial += 1
    if spatial == 0:
        return
    elements = _product(extents[:spatial])
    if spatial < len(loops):
        # the two innermost spatial loops stay loops when the outer ones give the cores enough to share: fused into
        # the parallel loop, every output would recompute its row and column by division (ResNet-18's max pool:
        # 0.96 ms so, 0.3 ms as a nest)
        outer = spatial - 2 if spatial > 2 and _product(extents[:spatial - 2]) >= 8 else spatial
        _parallel_outer(sch, loops[:outer], _product(extents))
        if _product(extents[spatial:]) <= SMALL_REDUCTION:  # pooling windows: unrolled, registers instead of a loop
            for loop in loops[spatial:]:
                sch.unroll(loop)
        return
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    if elements % lanes == 0 and elements >= lanes:
        outer, inner = sch.split(fused, [None, lanes])
        sch.vectorize(inner)
        if elements >= PARALLEL_MIN_ELEMENTS:
            sch.parallel(outer)
    elif elements >= PARALLEL_MIN_ELEMENTS:
        sch.parallel(fused)


# Tried in order; the first that fits a function schedules it.
def _schedule_int8_dot_conv(sch, lanes: int, registers: int) -> None:
    """effc.backends.tvm.integer.dot's conv: a row tile of output pixels x one vector of int32 accumulators, one
    dot-product instruction (`vpdpbusd`, `sdot`) per pixel and 4 input channels; the data packing before it runs
    in parallel and the requantization is folded into the NCHW write after it."""
    from effc.backends.tvm.integer import dot

    conv = _find(sch, lambda name: name.startswith(dot.CONV_BLOCK))
    pack = _find(sch, lambda name: name.startswith(dot.PACK_DATA_BLOCK))
    unpack = _find(sch, lambda name: name.startswith(dot.UNPACK_BLOCK))
    key = _name(sch, conv)[len(dot.CONV_BLOCK):]
    pixels = dot.instruction_named(key).pixels
    _inline_elementwise(sch, keep=[pack, unpack])
    b, ob, y, x, oi, rc, ry, rx, ri = sch.get_loops(conv)
    extents = _extents(sch, [b, ob, y, x, oi, rc, ry, rx, ri])
    limit = min(dot.MAX_ROW_TILE, registers - MIN_SPARE_REGISTERS) // pixels
    xo, xi = sch.split(x, [None, pixels * _largest_divisor(extents[3] // pixels, limit)])
    if pixels == 1:
        sch.reorder(b, ob, y, xo, rc, ry, rx, xi, oi, ri)
        tensorized = oi
    else:  # each instruction computes `pixels` adjacent outputs
        xi, tensorized = sch.split(xi, [None, pixels])
        sch.reorder(b, ob, y, xo, rc, ry, rx, xi, tensorized, oi, ri)
    _parallel_outer(sch, [b, ob, y], _product(extents) // dot.IN_BLOCK)
    sch.decompose_reduction(conv, rc)
    sch.unroll(xi)
    sch.tensorize(tensorized, dot.register_intrinsic(key))
    _parallel_outer(sch, sch.get_loops(pack)[:3], _product(extents))
    _fold_epilogue(sch, unpack, lanes)
    _parallel_outer(sch, sch.get_loops(unpack)[:3], _product(extents))


def _schedule_int8_blocked_dot_conv(sch, lanes: int, registers: int) -> None:
    """effc.backends.tvm.integer.dot's blocked conv (NCHW[l]c in and out): a row tile of output pixels x one vector
    of int32 accumulators in registers, one dot-product instruction per pixel and 4 input channels; the tile's
    requantization (and a residual add fused after it) folded into its write-back, whole vectors of uint8. The
    padded input copy, where there is one, runs in parallel before."""
    from effc.backends.tvm.integer import dot

    conv = _find(sch, lambda name: name.startswith(dot.BLOCKED_CONV_BLOCK))
    pads = _blocks_named(sch, dot.PACK_DATA_BLOCK)
    key = _name(sch, conv)[len(dot.BLOCKED_CONV_BLOCK):]
    _inline_elementwise(sch, keep=[conv, *pads])
    b, ob, y, x, oi, rb, rc, ry, rx, ri = sch.get_loops(conv)
    extents = _extents(sch, [b, ob, y, x, oi, rb, rc, ry, rx, ri])
    # several blocks of output channels per tile: each broadcast input word then feeds as many instructions
    vectors, columns = _blocked_tile(extents[1], extents[3], registers - MIN_SPARE_REGISTERS)
    ob, obi = sch.split(ob, [None, vectors])
    xo, xi = sch.split(x, [None, columns])
    sch.reorder(b, ob, y, xo, rb, ry, rx, rc, xi, obi, oi, ri)
    # a "global" tile buffer: the intrinsics describe global buffers, and tensorize compares scopes; compacted to
    # the tile, LLVM keeps it in registers all the same
    writer = sch.cache_write(conv, 0, "global")
    sch.reverse_compute_at(writer, xo)
    _fold_epilogue(sch, writer, lanes)
    _parallel_outer(sch, [b, ob, y], _product(extents) // dot.IN_BLOCK)
    sch.decompose_reduction(conv, rb)
    sch.unroll(xi)
    sch.unroll(obi)
    sch.tensorize(oi, dot.register_intrinsic(key))
    _unroll_tile_writer(sch, writer, xo)
    for pad in pads:
        loops = sch.get_loops(pad)
        _parallel_outer(sch, loops[:3], _product(extents))
        sch.vectorize(loops[-1])


def _schedule_int8_depthwise(sch, lanes: int, registers: int) -> None:
    """effc.backends.tvm.integer.depthwise's conv: per (image, channel) in parallel, its zero-point-padded plane
    built in cache, then each output row in vectors of int32 accumulators (up to one register of them), the
    window unrolled, the requantization folded into each tile's write."""
    from effc.backends.tvm.integer import depthwise

    conv = _find(sch, lambda name: name.startswith(depthwise.CONV_BLOCK))
    pad = _find(sch, lambda name: name.startswith(depthwise.PAD_BLOCK))
    _inline_elementwise(sch, keep=[conv, pad])
    b, c, y, x, ry, rx = sch.get_loops(conv)
    extents = _extents(sch, [b, c, y, x, ry, rx])
    width = _largest_divisor(extents[3], lanes)
    xo, xi = sch.split(x, [None, width])
    sch.reorder(b, c, y, xo, ry, rx, xi)
    writer = sch.cache_write(conv, 0, "local")
    sch.reverse_compute_at(writer, xo)
    _fold_epilogue(sch, writer, lanes)
    outer = sch.fuse(b, c)
    sch.parallel(outer)
    sch.compute_at(pad, outer)
    sch.vectorize(xi)
    sch.unroll(ry)
    sch.unroll(rx)
    _unroll_tile_writer(sch, writer, xo)
    sch.decompose_reduction(conv, ry)


def _schedule_int8_dot_matmul(sch, lanes: int, registers: int) -> None:
    """effc.backends.tvm.integer.dense's matmul: a tile of rows x up to 4 vectors of int32 accumulators, one
    dot-product instruction (`vpdpbusd`, `sdot`) per row, vector and 4 inputs; the requantization folded into the
    unpacking write after it."""
    from effc.backends.tvm.integer import dense, dot

    mm = _find(sch, lambda name: name.startswith(dense.DENSE_BLOCK))
    unpack = _find(sch, lambda name: name == dense.UNPACK_BLOCK)
    keep = [mm, unpack, *_blocks_named(sch, dense.PACK_DATA_BLOCK)]
    key = _name(sch, mm)[len(dense.DENSE_BLOCK):]
    _inline_elementwise(sch, keep=keep)
    *lead, nb, ni, rk, ri = sch.get_loops(mm)
    if not lead:
        raise RuleMismatch
    extents = _extents(sch, [*lead, nb, ni, rk, ri])
    # several vectors of outputs per tile: each broadcast activation word then feeds as many instructions
    vectors, rows = _blocked_tile(extents[-4], extents[-5], registers - MIN_SPARE_REGISTERS)
    row_outer, row_inner = sch.split(lead[-1], [None, rows])
    nb_outer, nb_inner = sch.split(nb, [None, vectors])
    sch.reorder(*lead[:-1], row_outer, nb_outer, rk, row_inner, nb_inner, ni, ri)
    _parallel_outer(sch, [*lead[:-1], row_outer, nb_outer], _product(extents) // dot.IN_BLOCK)
    sch.decompose_reduction(mm, rk)
    sch.unroll(row_inner)
    sch.unroll(nb_inner)
    sch.tensorize(ni, dot.register_intrinsic(key))
    for pack in keep[2:]:
        sch.vectorize(sch.get_loops(pack)[-1])
    _fold_epilogue(sch, unpack, lanes)
    _parallel_outer(sch, sch.get_loops(unpack)[:-1], _product(extents))


RULES = (
    ("int8-blocked-dot-conv", _schedule_int8_blocked_dot_conv),
    ("int8-dot-conv", _schedule_int8_dot_conv),
    ("int8-depthwise", _schedule_int8_depthwise),
    ("int8-dot-matmul", _schedule_int8_dot_matmul),
    ("blocked-conv", _schedule_blocked_conv),
    ("blocked-depthwise", _schedule_blocked_depthwise),
    ("pointwise-conv", _schedule_pointwise_conv),
    ("packed-conv", _schedule_packed_conv),
    ("matmul", _schedule_matmul),
    ("grouped-conv", _schedule_grouped_conv),
    ("generic", _schedule_generic),
)
