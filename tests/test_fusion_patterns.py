"""The decomposed LayerNormalization, Softmax and GELU patterns that exporters emit become single ONNX ops."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import effc
from effc import Context, load_model
from effc.runtime import run_model
from tests.conftest import FLOAT, make_model

RNG = np.random.default_rng(0)


def fuse(proto, rule):
    result = effc.optimize(load_model(proto), f"fuse(rules=[{rule}],explain=true),dce", Context(verify=True))
    x = RNG.standard_normal((2, 3, 8)).astype(np.float32)
    np.testing.assert_allclose(run_model(result.model, {"x": x})["y"], run_model(proto, {"x": x})["y"], rtol=1e-4, atol=1e-5)
    return [n.op for n in result.model.graph.nodes], result.context.reports["fuse"]


def layernorm_model(affine=True, square="Pow", opset=17):
    nodes = [helper.make_node("ReduceMean", ["x"], ["mean"], name="mean", axes=[-1]),
             helper.make_node("Sub", ["x", "mean"], ["d"], name="sub"),
             helper.make_node("Pow", ["d", "two"], ["sq"], name="pow") if square == "Pow" else helper.make_node("Mul", ["d", "d"], ["sq"], name="sq"),
             helper.make_node("ReduceMean", ["sq"], ["var"], name="var", axes=[-1]),
             helper.make_node("Add", ["var", "eps"], ["ve"], name="add_eps"),
             helper.make_node("Sqrt", ["ve"], ["std"], name="sqrt"),
             helper.make_node("Div", ["d", "std"], ["n" if affine else "y"], name="div")]
    inits = {"two": np.array(2.0, np.float32), "eps": np.array(1e-5, np.float32)}
    if affine:
        nodes += [helper.make_node("Mul", ["n", "gamma"], ["g"], name="gamma"), helper.make_node("Add", ["g", "beta"], ["y"], name="beta")]
        inits.update(gamma=RNG.uniform(0.5, 1.5, 8).astype(np.float32), beta=RNG.standard_normal(8).astype(np.float32))
    return make_model(nodes, [("x", FLOAT, [2, 3, 8])], [("y", FLOAT, [2, 3, 8])], inits, opset=opset)


@pytest.mark.parametrize("affine, square", [(True, "Pow"), (False, "Mul")])
def test_decomposed_layernorm_becomes_one_op(affine, square):
    ops, report = fuse(layernorm_model(affine, square), "layernorm")
    assert ops == ["LayerNormalization"] and report["fired"] == {"layernorm": 1}


def test_layernorm_over_a_non_last_axis_is_refused():
    proto = layernorm_model()
    proto.graph.node[0].attribute[0].ints[:] = [1]
    ops, report = fuse(proto, "layernorm")
    assert "LayerNormalization" not in ops
    assert "last axis" in " ".join(report["not_fired"]["layernorm"])


@pytest.mark.parametrize("stable", [True, False])
def test_decomposed_softmax_becomes_one_op(stable):
    nodes = [helper.make_node("ReduceMax", ["x"], ["m"], name="max", axes=[-1]), helper.make_node("Sub", ["x", "m"], ["s"], name="sub")] if stable else []
    nodes += [helper.make_node("Exp", ["s" if stable else "x"], ["e"], name="exp"),
              helper.make_node("ReduceSum", ["e", "axes"], ["t"], name="sum"),
              helper.make_node("Div", ["e", "t"], ["y"], name="div")]
    proto = make_model(nodes, [("x", FLOAT, [2, 3, 8])], [("y", FLOAT, [2, 3, 8])], {"axes": np.array([-1], np.int64)})
    ops, _ = fuse(proto, "softmax")
    assert ops == ["Softmax"]


def gelu_model(opset):
    nodes = [helper.make_node("Div", ["x", "root2"], ["a"], name="div"), helper.make_node("Erf", ["a"], ["b"], name="erf"),
             helper.make_node("Add", ["b", "one"], ["c"], name="add"), helper.make_node("Mul", ["x", "c"], ["d"], name="mul"),
             helper.make_node("Mul", ["d", "half"], ["y"], name="half")]
    return make_model(nodes, [("x", FLOAT, [2, 3, 8])], [("y", FLOAT, [2, 3, 8])],
                      {"root2": np.array(np.sqrt(2), np.float32), "one": np.array(1, np.float32), "half": np.array(0.5, np.float32)}, opset=opset)


def test_gelu_becomes_one_op_from_opset_20():
    ops, _ = fuse(gelu_model(20), "gelu")
    assert ops == ["Gelu"]


def test_gelu_is_left_alone_below_opset_20():
    ops, report = fuse(gelu_model(17), "gelu")
    assert "Gelu" not in ops and "needs opset 20" in " ".join(report["not_fired"]["gelu"])


def test_slices_of_different_axes_merge_and_same_axis_is_refused():
    def slice_model(second_axis):
        nodes = [helper.make_node("Slice", ["x", "s1", "e1", "a1"], ["h"], name="first"),
                 helper.make_node("Slice", ["h", "s2", "e2", "a2"], ["y"], name="second")]
        out = [2, 2, 5] if second_axis == 2 else [2, 0, 8]
        return make_model(nodes, [("x", FLOAT, [2, 3, 8])], [("y", FLOAT, out)],
                          {"s1": np.array([1], np.int64), "e1": np.array([3], np.int64), "a1": np.array([1], np.int64),
                           "s2": np.array([2], np.int64), "e2": np.array([7], np.int64), "a2": np.array([second_axis], np.int64)})

    ops, _ = fuse(slice_model(2), "slice-slice")
    assert ops == ["Slice"]
    ops, report = fuse(slice_model(1), "slice-slice")
    assert ops == ["Slice", "Slice"] and "same axis" in " ".join(report["not_fired"]["slice-slice"])


def test_squeeze_unsqueeze_chain_with_static_shape_becomes_one_reshape():
    nodes = [helper.make_node("Unsqueeze", ["x", "ax0"], ["a"], name="unsq"),
             helper.make_node("Squeeze", ["a", "ax1"], ["b"], name="sq"),
             helper.make_node("Flatten", ["b"], ["y"], name="flat", axis=2)]
    proto = make_model(nodes, [("x", FLOAT, [2, 3, 8])], [("y", FLOAT, [6, 8])],
                       {"ax0": np.array([0], np.int64), "ax1": np.array([0], np.int64)})
    result = effc.optimize(load_model(proto), "fuse,dce", Context(verify=True))
    assert [n.op for n in result.model.graph.nodes] == ["Reshape"]
