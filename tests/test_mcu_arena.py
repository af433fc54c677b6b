"""effc's arena planner for the microcontroller lowering: no two live tensors overlap, the arena reaches the lower
bound on chains, and malformed plans are refused."""

import random

import pytest

from effc.backends.tvm.mcu.arena import ArenaPlan, Buffer, plan_arena
from effc.errors import EffcError


def _assert_valid(buffers: list[Buffer], plan: ArenaPlan) -> None:
    a = plan.alignment
    for b in buffers:
        assert plan.offsets[b.name] % a == 0
        assert plan.offsets[b.name] + b.size <= plan.arena_bytes
    for i, x in enumerate(buffers):
        for y in buffers[i + 1:]:
            if x.overlaps(y) and x.size and y.size:
                xo, yo = plan.offsets[x.name], plan.offsets[y.name]
                assert xo + x.size <= yo or yo + y.size <= xo, (x, y, plan.offsets)
    assert plan.lower_bound_bytes <= plan.arena_bytes <= plan.naive_bytes


def test_a_chain_of_calls_needs_two_live_tensors_only():
    # conv -> relu -> pool -> dense: each tensor is read by the next call only.
    sizes = [4096, 4096, 1024, 40]
    buffers = [Buffer(f"t{i}", s, i, i + 1) for i, s in enumerate(sizes)]
    plan = plan_arena(buffers)
    _assert_valid(buffers, plan)
    assert plan.arena_bytes == plan.lower_bound_bytes == 8192
    assert plan.naive_bytes == 4096 + 4096 + 1024 + 48


def test_a_skip_connection_stays_live_across_the_branch():
    buffers = [Buffer("x", 1000, 0, 3), Buffer("a", 1000, 1, 2), Buffer("b", 1000, 2, 3), Buffer("y", 1000, 3, 4)]
    plan = plan_arena(buffers, alignment=8)
    _assert_valid(buffers, plan)
    assert plan.lower_bound_bytes == 3 * 1000
    assert plan.arena_bytes == 3 * 1000


def test_random_lifetimes_never_overlap():
    rng = random.Random(17)
    for _ in range(50):
        buffers = []
        for i in range(rng.randint(1, 12)):
            first = rng.randint(0, 10)
            buffers.append(Buffer(f"t{i}", rng.randint(0, 5000), first, first + rng.randint(0, 4)))
        _assert_valid(buffers, plan_arena(buffers))


def test_empty_and_malformed_plans():
    assert plan_arena([]).arena_bytes == 0
    with pytest.raises(EffcError, match="power of two"):
        plan_arena([Buffer("a", 4, 0, 0)], alignment=12)
    with pytest.raises(EffcError, match="repeat"):
        plan_arena([Buffer("a", 4, 0, 0), Buffer("a", 4, 1, 1)])
    with pytest.raises(EffcError, match="lifetime"):
        plan_arena([Buffer("a", 4, 2, 1)])
