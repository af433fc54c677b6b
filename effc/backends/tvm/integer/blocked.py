"""Quantized activations kept in a blocked layout between integer ops: NCHW[l]c, `l` channels innermost.

A dot-product conv accumulates [N, O/l, OH, OW, l] (one vector of `l` int32 per pixel, dot.py), so its
requantized output is already blocked; unpacking it to NCHW only for the next conv to pack it again cost a
transpose on each side of every kernel. In the rewrite (rewrite.py) an integer op's uint8/int8 result therefore
stays blocked when it feeds another op that reads blocks: a dot conv (which packs 4-channel groups from the
blocks with a contiguous copy), a blocked depthwise conv, a max pool, or the elementwise Q(add/relu(DQ, DQ)) of a
residual; only ops that need NCHW read an unpacked copy (`unpack`), which dead-code elimination drops where nothing
reads it. Channels past the real count (24 channels in blocks of 16) hold don't-care values: every consumer of
blocks ignores them (zero weights, the unpack drops them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNPACK_BLOCK = "effc_int8_blocked_unpack"


@dataclass(frozen=True)
class Blocked:
    """A Relax expression holding an activation as [N, ceil(C/lanes), H, W, lanes]."""

    expr: object
    lanes: int
    channels: int


def channel_constant(values: np.ndarray, lanes: int, fill=0) -> np.ndarray:
    """Per-channel values [C] -> [1, ceil(C/lanes), 1, 1, lanes], the channels past C `fill`."""
    channels = values.size
    blocks = -(-channels // lanes)
    padded = np.full(blocks * lanes, fill, values.dtype)
    padded[:channels] = values.reshape(-1)
    return padded.reshape(1, blocks, 1, 1, lanes)


def unpack(data, channels: int):
    """TE: [N, C/l, H, W, l] -> [N, C, H, W]."""
    from tvm import te

    n, _, height, width, lanes = (int(d) for d in data.shape)
    return te.compute((n, channels, height, width), lambda b, c, y, x: data[b, c // lanes, y, x, c % lanes],
                      name=UNPACK_BLOCK)


def emit_unpacked(builder, blocked: Blocked):
    """The NCHW view of `blocked` as a Relax call (a kernel of its own, or fused into its NCHW consumer)."""
    return builder.call_te(unpack, blocked.expr, blocked.channels, primfunc_name_hint="effc_int8_unpack")
