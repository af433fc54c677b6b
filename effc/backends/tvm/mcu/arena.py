"""Offsets of a model's intermediate tensors inside one static arena.

A tensor lives from the call that writes it to the last call that reads it (both inclusive). Placement is greedy
by size (largest first, each at the lowest aligned offset that does not overlap a placed tensor whose lifetime
overlaps), the heuristic TensorFlow Lite Micro uses. The plan reports itself against the lower bound (the largest
total of tensors live at one call) and the naive sum (every tensor its own buffer).
"""

from __future__ import annotations

from dataclasses import dataclass

from effc.errors import EffcError

DEFAULT_ALIGNMENT = 16


@dataclass(frozen=True)
class Buffer:
    """An intermediate tensor: `size` bytes, written at call `first` and last read at call `last`."""

    name: str
    size: int
    first: int
    last: int

    def overlaps(self, other: Buffer) -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass(frozen=True)
class ArenaPlan:
    offsets: dict[str, int]
    arena_bytes: int
    lower_bound_bytes: int
    naive_bytes: int
    alignment: int

    def to_json(self) -> dict:
        return {"arena_bytes": self.arena_bytes, "lower_bound_bytes": self.lower_bound_bytes,
                "naive_bytes": self.naive_bytes, "alignment": self.alignment, "offsets": dict(self.offsets)}


def _aligned(size: int, alignment: int) -> int:
    return -(-size // alignment) * alignment


def plan_arena(buffers: list[Buffer], alignment: int = DEFAULT_ALIGNMENT) -> ArenaPlan:
    """Place `buffers` in one arena; sizes are rounded up to `alignment` (a power of two)."""
    if alignment <= 0 or alignment & (alignment - 1):
        raise EffcError(f"arena alignment must be a power of two, got {alignment}")
    names = [b.name for b in buffers]
    if len(set(names)) != len(names):
        raise EffcError("arena plan: buffer names repeat")
    for b in buffers:
        if b.size < 0 or b.first > b.last:
            raise EffcError(f"arena plan: buffer {b.name} has size {b.size} and lifetime [{b.first}, {b.last}]")
    sized = [Buffer(b.name, _aligned(b.size, alignment), b.first, b.last) for b in buffers]
    placed: list[tuple[Buffer, int]] = []
    offsets: dict[str, int] = {}
    for buf in sorted(sized, key=lambda b: (-b.size, b.first, b.name)):
        conflicts = sorted((off, off + other.size) for other, off in placed if other.overlaps(buf) and other.size)
        offset = 0
        for start, end in conflicts:
            if offset + buf.size <= start:
                break
            offset = max(offset, end)
        placed.append((buf, offset))
        offsets[buf.name] = offset
    arena = max((off + b.size for b, off in placed), default=0)
    steps = {t for b in sized for t in (b.first, b.last)}
    lower = max((sum(b.size for b in sized if b.first <= t <= b.last) for t in steps), default=0)
    return ArenaPlan({n: offsets[n] for n in names}, arena, lower, sum(b.size for b in sized), alignment)
