"""The decomposed LayerNormalization, Softmax and GELU patterns that exporters emit become single ONNX ops."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import effc
from effc import Context, load_model
from effc.onnx_runtime import run_model
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


SQRT_2_PI = np.sqrt(2 / np.pi)


def gelu_nodes(form: str) -> list:
    """Decomposed GELU as exporters write it: the erf form (PyTorch), erf with x * (1/sqrt 2), and the tanh form with
    the product grouped three ways (GPT-2's gelu_new, x^3 as Pow or as x * x * x)."""
    mul = lambda a, b, out: helper.make_node("Mul", [a, b], [out], name=out)  # noqa: E731
    add = lambda a, b, out: helper.make_node("Add", [a, b], [out], name=out)  # noqa: E731
    if form.startswith("erf"):
        arg = [helper.make_node("Div", ["x", "root2"], ["a"], name="a")] if form == "erf" else [mul("x", "inv_root2", "a")]
        return [*arg, helper.make_node("Erf", ["a"], ["t"], name="erf"), add("t", "one", "u"), mul("x", "u", "d"), mul("d", "half", "y")]
    if form == "tanh-pow":
        cube = [helper.make_node("Pow", ["x", "three"], ["x3"], name="pow")]
    else:
        cube = [mul("x", "x", "x2"), mul("x2", "x", "x3")]
    nodes = [*cube, mul("k", "x3", "kx3"), add("x", "kx3", "inner"), mul("c", "inner", "arg"),
             helper.make_node("Tanh", ["arg"], ["t"], name="tanh"), add("one", "t", "u")]
    if form == "tanh-pow":  # (0.5 * x) * u
        return nodes + [mul("half", "x", "hx"), mul("hx", "u", "y")]
    return nodes + [mul("u", "half", "uh"), mul("x", "uh", "y")]  # x * (u * 0.5)


def gelu_model(opset, form="erf", extra_reader=False):
    nodes = gelu_nodes(form)
    outputs = [("y", FLOAT, [2, 3, 8])]
    if extra_reader:
        outputs.append(("t", FLOAT, [2, 3, 8]))
    consts = {"root2": np.sqrt(2), "inv_root2": 1 / np.sqrt(2), "one": 1.0, "half": 0.5, "three": 3.0, "k": 0.044715,
              "c": SQRT_2_PI}
    used = {i for n in nodes for i in n.input}
    return make_model(nodes, [("x", FLOAT, [2, 3, 8])], outputs,
                      {k: np.array(v, np.float32) for k, v in consts.items() if k in used}, opset=opset)


@pytest.mark.parametrize("form, approximate", [("erf", "none"), ("erf-mul", "none"), ("tanh-pow", "tanh"),
                                               ("tanh-mul", "tanh")])
def test_gelu_becomes_one_op_from_opset_20(form, approximate):
    rule = "gelu" if approximate == "none" else "gelu-tanh"
    result = effc.optimize(load_model(gelu_model(20, form)), f"fuse(rules=[{rule}]),dce", Context(verify=True))
    assert [(n.op, n.attrs.get("approximate")) for n in result.model.graph.nodes] == [("Gelu", approximate)]
    x = RNG.standard_normal((2, 3, 8)).astype(np.float32) * 3
    np.testing.assert_allclose(run_model(result.model, {"x": x})["y"], run_model(gelu_model(20, form), {"x": x})["y"],
                               rtol=1e-5, atol=1e-5)


def test_gelu_is_left_alone_below_opset_20():
    ops, report = fuse(gelu_model(17), "gelu")
    assert "Gelu" not in ops and "needs opset 20" in " ".join(report["not_fired"]["gelu"])


def test_gelu_with_an_intermediate_read_elsewhere_is_left_alone():
    result = effc.optimize(load_model(gelu_model(20, "tanh-pow", extra_reader=True)), "fuse(rules=[gelu-tanh],explain=true)",
                           Context(verify=True))
    assert "Gelu" not in [n.op for n in result.model.graph.nodes]
    assert "readers outside" in " ".join(result.context.reports["fuse"]["not_fired"]["gelu-tanh"])


def test_a_tanh_that_is_not_gelu_is_left_alone():
    nodes = [helper.make_node("Tanh", ["x"], ["t"], name="tanh"), helper.make_node("Add", ["t", "one"], ["u"], name="add"),
             helper.make_node("Mul", ["x", "u"], ["d"], name="mul"), helper.make_node("Mul", ["d", "half"], ["y"], name="half")]
    proto = make_model(nodes, [("x", FLOAT, [2, 3, 8])], [("y", FLOAT, [2, 3, 8])],
                       {"one": np.array(1, np.float32), "half": np.array(0.5, np.float32)}, opset=20)
    ops, report = fuse(proto, "gelu-tanh")
    assert "Gelu" not in ops and "argument is not" in " ".join(report["not_fired"]["gelu-tanh"])


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
