"""Dependency groups on small graphs, one per kind of dependency.

Each graph has "dead" channels (all-zero producer weights and biases). Pruning them by L1 norm with
no reconstruction must then be exact: the pruned model's outputs equal the original's on ONNX Runtime,
and the weights shrink exactly where the group's channels live.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import effc
from effc.analysis.channel_groups import dependency_groups
from effc.ir import load_model
from effc.onnx_runtime import random_inputs, run_model
from effc.passes.prune.prune import Prune
from tests.conftest import FLOAT, make_model

RNG = np.random.default_rng(0)


def weights(*shape, dead=(), axis=0):
    w = RNG.standard_normal(shape).astype(np.float32)
    index = [slice(None)] * len(shape)
    index[axis] = list(dead)
    w[tuple(index)] = 0.0
    return w


def conv(name, x, w, y, b=None, **attrs):
    return helper.make_node("Conv", [x, w] + ([b] if b else []), [y], name=name, **attrs)


def relu(name, x, y):
    return helper.make_node("Relu", [x], [y], name=name)


def prune_exact(proto, **options):
    """Prune dead channels (L1, round_to=1, no reconstruction); assert outputs unchanged; return (model, result)."""
    model = load_model(proto)
    original = model.copy()
    result = effc.optimize(model, [Prune(round_to=1, reconstruct=False, **options)], effc.Context())
    feeds = random_inputs(original.input_specs(), seed=1)
    expected, got = run_model(original, feeds), run_model(result.model, feeds)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-4, atol=1e-4)
    return result.model, result.ledger.rows[-1].pass_stats


def node(model, name):
    return next(n for n in model.graph.nodes if n.name == name)


def prunable_groups(proto, protect=()):
    model = load_model(proto)
    model.infer_shapes()
    return [g for g in dependency_groups(model, protect) if g.blocked is None], model


def residual_model():
    dead = (1, 5)
    return make_model(
        [conv("a", "x", "wa", "ha", "ba", pads=[1, 1, 1, 1]), relu("ra", "ha", "h1"),
         conv("b", "h1", "wb", "hb", pads=[1, 1, 1, 1]),
         helper.make_node("Add", ["hb", "h1"], ["s"], name="add"), relu("rs", "s", "h2"),
         conv("c", "h2", "wc", "y")],
        [("x", FLOAT, [1, 4, 8, 8])], [("y", FLOAT, None)],
        {"wa": weights(8, 4, 3, 3, dead=dead), "ba": weights(8, dead=dead), "wb": weights(8, 8, 3, 3, dead=dead),
         "wc": weights(4, 8, 1, 1)})


def test_residual_add_joins_both_branches_into_one_group():
    groups, _ = prunable_groups(residual_model())
    assert len(groups) == 1
    group = groups[0]
    assert group.size == 8
    assert [n.name for n in group.producers] == ["a", "b"]
    assert [n.name for n in group.consumers] == ["b", "c"]
    model, stats = prune_exact(residual_model(), ratio=0.25)
    assert stats["channels_removed"] == 2
    assert node(model, "b").inputs[1].shape == (6, 6, 3, 3)
    assert node(model, "c").inputs[1].shape == (4, 6, 1, 1)
    assert node(model, "a").inputs[2].shape == (6,)


def concat_model():
    return make_model(
        [conv("a", "x", "wa", "ha"), conv("b", "x", "wb", "hb"),
         helper.make_node("Concat", ["ha", "hb"], ["h"], name="cat", axis=1), relu("r", "h", "h1"),
         conv("c", "h1", "wc", "y")],
        [("x", FLOAT, [1, 3, 5, 5])], [("y", FLOAT, None)],
        {"wa": weights(4, 3, 1, 1, dead=(0,)), "wb": weights(6, 3, 1, 1, dead=(2, 3)), "wc": weights(3, 10, 1, 1)})


def test_concat_gives_each_input_its_offset_in_the_consumer():
    groups, _ = prunable_groups(concat_model())
    assert sorted(g.size for g in groups) == [4, 6]
    offsets = {g.size: [m.offset for m in g.members if m.node.name == "c"] for g in groups}
    assert offsets == {4: [0], 6: [4]}
    model, stats = prune_exact(concat_model(), ratio=0.0, per_layer={"a": 0.25, "b": 0.34})
    assert stats["channels_removed"] == 3
    assert node(model, "c").inputs[1].shape == (3, 7, 1, 1)


def depthwise_model():
    dead = (2, 6)
    return make_model(
        [conv("a", "x", "wa", "ha"), relu("ra", "ha", "h1"),
         conv("dw", "h1", "wd", "hd", "bd", group=8, pads=[1, 1, 1, 1]), relu("rd", "hd", "h2"),
         conv("c", "h2", "wc", "y")],
        [("x", FLOAT, [1, 3, 6, 6])], [("y", FLOAT, None)],
        {"wa": weights(8, 3, 1, 1, dead=dead), "wd": weights(8, 1, 3, 3), "bd": weights(8, dead=dead),
         "wc": weights(4, 8, 1, 1)})


def test_depthwise_conv_carries_the_group_and_shrinks_its_group_count():
    groups, _ = prunable_groups(depthwise_model())
    assert len(groups) == 1 and sorted({m.role for m in groups[0].members}) == ["consumer", "depthwise", "producer"]
    model, _ = prune_exact(depthwise_model(), ratio=0.25)
    dw = node(model, "dw")
    assert dw.attrs["group"] == 6 and dw.inputs[1].shape == (6, 1, 3, 3) and dw.inputs[2].shape == (6,)


def flatten_model(reshape: bool):
    flatten = (helper.make_node("Reshape", ["p", "shape"], ["f"], name="flat") if reshape
               else helper.make_node("Flatten", ["p"], ["f"], name="flat"))
    return make_model(
        [conv("a", "x", "wa", "ha", "ba"), relu("r", "ha", "h1"),
         helper.make_node("MaxPool", ["h1"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
         flatten, helper.make_node("Gemm", ["f", "wg", "bg"], ["y"], name="fc", transB=1)],
        [("x", FLOAT, [1, 2, 4, 4])], [("y", FLOAT, None)],
        {"wa": weights(6, 2, 1, 1, dead=(1, 4)), "ba": weights(6, dead=(1, 4)), "wg": weights(5, 24), "bg": weights(5),
         "shape": np.array([1, 24], dtype=np.int64)})


@pytest.mark.parametrize("reshape", [False, True])
def test_flatten_into_gemm_drops_each_channels_columns(reshape):
    groups, _ = prunable_groups(flatten_model(reshape))
    fc_member = next(m for m in groups[0].members if m.node.name == "fc")
    assert (fc_member.repeat, fc_member.axis) == (4, 1)
    model, _ = prune_exact(flatten_model(reshape), ratio=0.34)
    assert node(model, "fc").inputs[1].shape == (5, 16)
    if reshape:
        assert list(node(model, "flat").inputs[1].values) == [1, 16]


def passthrough_model(resize_sizes=False):
    dead = (0, 3)
    mean, var = weights(6, dead=dead), np.abs(weights(6)) + 0.5
    return make_model(
        [conv("a", "x", "wa", "ha"),
         helper.make_node("BatchNormalization", ["ha", "g", "beta", "mean", "var"], ["hb"], name="bn"),
         helper.make_node("Mul", ["hb", "scale"], ["hm"], name="mul"),
         helper.make_node("Pad", ["hm", "pads"], ["hp"], name="pad"),
         helper.make_node("Resize", ["hp", "", "", "sizes"] if resize_sizes else ["hp", "", "scales"], ["hr"],
                          name="resize", mode="nearest"),
         helper.make_node("GlobalAveragePool", ["hr"], ["hg"], name="gap"),
         conv("c", "hg", "wc", "y")],
        [("x", FLOAT, [1, 3, 4, 4])], [("y", FLOAT, None)],
        {"wa": weights(6, 3, 1, 1, dead=dead), "g": weights(6), "beta": weights(6, dead=dead), "mean": mean, "var": var,
         "scale": weights(1, 6, 1, 1), "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64),
         "scales": np.array([1, 1, 2, 2], dtype=np.float32), "sizes": np.array([1, 6, 12, 12], dtype=np.int64),
         "wc": weights(2, 6, 1, 1)})


@pytest.mark.parametrize("resize_sizes", [False, True])
def test_batchnorm_channel_constants_pad_resize_and_pooling_carry_the_group(resize_sizes):
    groups, _ = prunable_groups(passthrough_model(resize_sizes))
    assert len(groups) == 1
    roles = ["batchnorm", "constant", "consumer", "producer"] + (["resize"] if resize_sizes else [])
    assert sorted({m.role for m in groups[0].members}) == sorted(roles)
    model, _ = prune_exact(passthrough_model(resize_sizes), ratio=0.34)
    assert node(model, "bn").inputs[1].shape == (4,) and node(model, "mul").inputs[1].shape == (1, 4, 1, 1)
    if resize_sizes:
        assert list(node(model, "resize").inputs[3].values) == [1, 4, 12, 12]


def mlp_model():
    return make_model(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"), helper.make_node("Add", ["h", "b1"], ["hb"], name="bias"),
         relu("r", "hb", "h1"), helper.make_node("MatMul", ["h1", "w2"], ["y"], name="mm2")],
        [("x", FLOAT, [2, 8])], [("y", FLOAT, None)],
        {"w1": weights(8, 16, dead=(3, 9, 12, 15), axis=1), "b1": weights(16, dead=(3, 9, 12, 15)), "w2": weights(16, 4)})


def test_matmul_columns_and_bias_constant_form_a_group():
    model, _ = prune_exact(mlp_model(), ratio=0.25)
    assert node(model, "mm1").inputs[1].shape == (8, 12) and node(model, "mm2").inputs[1].shape == (12, 4)
    assert node(model, "bias").inputs[1].shape == (12,)


def grouped_model():
    """a (8 channels) -> grouped conv g (2 groups of 4 in, 4 out) -> c; one dead channel in every block."""
    return make_model(
        [conv("a", "x", "wa", "ha"), relu("ra", "ha", "h1"),
         conv("g", "h1", "wg", "hg", "bg", group=2, pads=[1, 1, 1, 1]), relu("rg", "hg", "h2"),
         conv("c", "h2", "wc", "y")],
        [("x", FLOAT, [1, 3, 6, 6])], [("y", FLOAT, None)],
        {"wa": weights(8, 3, 1, 1, dead=(1, 6)), "wg": weights(8, 4, 3, 3, dead=(2, 5)), "bg": weights(8, dead=(2, 5)),
         "wc": weights(4, 8, 1, 1)})


def test_grouped_conv_keeps_its_groups_and_loses_as_many_channels_per_group():
    groups, _ = prunable_groups(grouped_model())
    assert sorted((g.name, g.blocks) for g in groups) == [("a", 2), ("g", 2)]
    model, stats = prune_exact(grouped_model(), ratio=0.25)
    assert stats["channels_removed"] == 4
    grouped = node(model, "g")
    assert grouped.attrs["group"] == 2 and grouped.inputs[1].shape == (6, 3, 3, 3) and grouped.inputs[2].shape == (6,)
    assert node(model, "a").inputs[1].shape == (6, 3, 1, 1) and node(model, "c").inputs[1].shape == (4, 6, 1, 1)


def test_grouped_conv_drops_the_weakest_channels_of_each_group_not_overall():
    # both dead channels of `a` in group 0: group 1 must still lose one (its weakest), so the result is not exact
    proto = grouped_model()
    model = load_model(proto)
    wa = np.asarray(node(model, "a").inputs[1].values).copy()
    wa[[0, 1]] = 0.0
    wa[4:] = 10.0 * weights(4, 3, 1, 1)
    wa[5] *= 0.01
    node(model, "a").inputs[1].values = wa
    result = effc.optimize(model, [Prune(round_to=1, reconstruct=False, per_layer={"a": 0.25}, ratio=0.0)],
                           effc.Context()).model
    kept = np.asarray(node(result, "a").inputs[1].values)
    assert kept.shape[0] == 6
    assert np.count_nonzero(np.abs(kept).reshape(6, -1).sum(axis=1) == 0) == 1  # one dead channel survives
    np.testing.assert_array_equal(kept[3:], wa[[4, 6, 7]])  # group 1 lost its weakest channel, 5


def test_what_blocks_a_group():
    proto = make_model(
        [conv("a", "x", "wa", "ha"), helper.make_node("Transpose", ["ha"], ["t"], name="tr", perm=[0, 2, 3, 1]),
         conv("b", "x", "wb", "hb"), conv("b2", "x", "wb2", "hb2"),
         helper.make_node("Concat", ["hb", "hb2"], ["cat"], name="cat", axis=1), conv("g", "cat", "wg", "hg", group=2),
         conv("c", "x", "wc", "y")],
        [("x", FLOAT, [1, 4, 4, 4])], [("t", FLOAT, None), ("hg", FLOAT, None), ("y", FLOAT, None)],
        {"wa": weights(4, 4, 1, 1), "wb": weights(4, 4, 1, 1), "wb2": weights(4, 4, 1, 1), "wg": weights(4, 4, 1, 1),
         "wc": weights(4, 4, 1, 1)})
    model = load_model(proto)
    model.infer_shapes()
    reasons = {g.name: g.blocked for g in dependency_groups(model)}
    assert reasons["a"] == "Transpose tr reads them"
    assert reasons["b"] == "grouped Conv g (group=2) reads a concatenation of them"
    assert reasons["c"] == "network output"
    assert reasons["group0"] == "network input"


def test_channel_broadcast_and_protect_block_the_group():
    proto = make_model(
        [conv("a", "x", "wa", "ha"), conv("m", "x", "wm", "hm"), helper.make_node("Mul", ["ha", "hm"], ["p"], name="gate"),
         conv("c", "p", "wc", "y")],
        [("x", FLOAT, [1, 4, 4, 4])], [("y", FLOAT, None)],
        {"wa": weights(4, 4, 1, 1), "wm": weights(1, 4, 1, 1), "wc": weights(2, 4, 1, 1)})
    groups, _ = prunable_groups(proto)
    assert groups == []
    assert not prunable_groups(residual_model(), protect=("c",))[0]
