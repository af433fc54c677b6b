"""fold-bn and the fuse rules on tiny graphs: rewrites, refusal reasons with explain=true, ORT numerics."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import effc
from effc.errors import EffcError
from effc.ir import load_model
from effc.onnx_runtime import run_model
from effc.pipeline.context import Context
from tests.conftest import FLOAT, make_model, optimize_checked

RNG = np.random.default_rng(0)


def run(proto, spec):
    result = optimize_checked(proto, spec, rtol=1e-4)
    report = result.context.reports.get(spec.split("(")[0])
    return [n.op for n in result.model.graph.nodes], report


def test_fold_bn_into_conv():
    c = 4
    bn = {"g": RNG.uniform(0.5, 2, c), "b": RNG.standard_normal(c), "m": RNG.standard_normal(c), "v": RNG.uniform(0.5, 2, c)}
    proto = make_model([helper.make_node("Conv", ["x", "w"], ["h"], pads=[1, 1, 1, 1]),
                        helper.make_node("BatchNormalization", ["h", "g", "b", "m", "v"], ["y"])],
                       [("x", FLOAT, [1, 3, 5, 5])], [("y", FLOAT, [1, c, 5, 5])],
                       {"w": RNG.standard_normal((c, 3, 3, 3)).astype(np.float32),
                        **{k: v.astype(np.float32) for k, v in bn.items()}})
    ops, _ = run(proto, "fold-bn")
    assert ops == ["Conv"]


def test_transpose_pair_merges_and_identity_disappears():
    proto = make_model([helper.make_node("Transpose", ["x"], ["a"], perm=[0, 2, 1]),
                        helper.make_node("Transpose", ["a"], ["b"], perm=[0, 2, 1]),
                        helper.make_node("Relu", ["b"], ["y"])],
                       [("x", FLOAT, ["N", 3, 4])], [("y", FLOAT, ["N", 3, 4])])
    ops, report = run(proto, "fuse")
    assert ops == ["Transpose", "Relu"] and report == {"transpose-transpose": 1}
    ops, _ = run(proto, "default")
    assert ops == ["Relu"]


def test_reshape_chain_merges_unless_shape_copies_a_dim():
    proto = make_model([helper.make_node("Reshape", ["x", "s1"], ["a"]),
                        helper.make_node("Reshape", ["a", "s2"], ["y"])],
                       [("x", FLOAT, [2, 6])], [("y", FLOAT, [4, 3])],
                       {"s1": np.array([3, 4], np.int64), "s2": np.array([4, -1], np.int64)})
    ops, _ = run(proto, "fuse")
    assert ops == ["Reshape"]
    proto = make_model([helper.make_node("Reshape", ["x", "s1"], ["a"]),
                        helper.make_node("Reshape", ["a", "s2"], ["y"])],
                       [("x", FLOAT, [2, 6])], [("y", FLOAT, [3, 4])],
                       {"s1": np.array([3, 4], np.int64), "s2": np.array([0, -1], np.int64)})
    ops, report = run(proto, "fuse(explain=true)")
    assert ops == ["Reshape", "Reshape"]
    assert any("copies a dimension" in why for why in report["not_fired"]["reshape-reshape"])


def test_matmul_add_becomes_gemm_only_in_2d():
    w = RNG.standard_normal((4, 3)).astype(np.float32)
    b = RNG.standard_normal(3).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])]
    ops, _ = run(make_model(nodes, [("x", FLOAT, [2, 4])], [("y", FLOAT, [2, 3])], {"w": w, "b": b}), "fuse")
    assert ops == ["Gemm"]
    ops, report = run(make_model(nodes, [("x", FLOAT, [2, 5, 4])], [("y", FLOAT, [2, 5, 3])], {"w": w, "b": b}),
                      "fuse(explain=true)")
    assert ops == ["MatMul", "Add"]
    assert report["not_fired"]["matmul-add-gemm"] == ["MatMul_0: MatMul input is not 2-D"]


def test_matmul_add_refuses_row_bias():
    w = RNG.standard_normal((4, 3)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])]
    proto = make_model(nodes, [("x", FLOAT, [2, 4])], [("y", FLOAT, [2, 3])],
                       {"w": w, "b": RNG.standard_normal((2, 1)).astype(np.float32)})
    ops, report = run(proto, "fuse(explain=true)")
    assert ops == ["MatMul", "Add"] and "does not broadcast" in report["not_fired"]["matmul-add-gemm"][0]


def test_unknown_rule_is_refused():
    with pytest.raises(EffcError, match="unknown rule"):
        effc.optimize(load_model(make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", FLOAT, [1])],
                                            [("y", FLOAT, [1])])), "fuse(rules=[nope])", Context())


def test_fold_pad_into_conv_pads():
    proto = make_model([helper.make_node("Pad", ["x", "pads"], ["p"]),
                        helper.make_node("Conv", ["p", "w"], ["y"], pads=[0, 1, 0, 1])],
                       [("x", FLOAT, [1, 2, 5, 5])], [("y", FLOAT, [1, 3, 5, 7])],
                       {"pads": np.array([0, 0, 1, 0, 0, 0, 1, 0], np.int64),
                        "w": RNG.standard_normal((3, 2, 3, 3)).astype(np.float32)})
    ops, _ = run(proto, "fold-pad")
    assert ops == ["Conv"]


def test_fold_pad_refuses_channel_padding():
    proto = make_model([helper.make_node("Pad", ["x", "pads"], ["p"]), helper.make_node("Conv", ["p", "w"], ["y"])],
                       [("x", FLOAT, [1, 1, 5, 5])], [("y", FLOAT, [1, 3, 3, 3])],
                       {"pads": np.array([0, 1, 0, 0, 0, 0, 0, 0], np.int64),
                        "w": RNG.standard_normal((3, 2, 3, 3)).astype(np.float32)})
    ops, _ = run(proto, "fold-pad")
    assert ops == ["Pad", "Conv"]


@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (3, 1, 1), ()])
def test_fold_scale_mul_and_add_into_conv(shape):
    nodes = [helper.make_node("Conv", ["x", "w"], ["h"]), helper.make_node("Mul", ["h", "s"], ["m"]),
             helper.make_node("Add", ["b", "m"], ["y"])]
    proto = make_model(nodes, [("x", FLOAT, [1, 2, 4, 4])], [("y", FLOAT, [1, 3, 2, 2])],
                       {"w": RNG.standard_normal((3, 2, 3, 3)).astype(np.float32),
                        "s": RNG.uniform(0.5, 2, shape).astype(np.float32),
                        "b": RNG.standard_normal(shape).astype(np.float32)})
    ops, _ = run(proto, "fold-scale")
    assert ops == ["Conv"]


def test_fold_scale_refuses_spatial_broadcast():
    nodes = [helper.make_node("Conv", ["x", "w"], ["h"]), helper.make_node("Mul", ["h", "s"], ["y"])]
    proto = make_model(nodes, [("x", FLOAT, [1, 2, 4, 4])], [("y", FLOAT, [1, 3, 2, 2])],
                       {"w": RNG.standard_normal((3, 2, 3, 3)).astype(np.float32),
                        "s": RNG.uniform(0.5, 2, (1, 1, 2, 2)).astype(np.float32)})
    ops, _ = run(proto, "fold-scale")
    assert ops == ["Conv", "Mul"]


def test_standalone_batchnorm_becomes_mul_add_and_can_be_kept():
    c = 3
    params = {"g": RNG.uniform(0.5, 2, c), "b": RNG.standard_normal(c), "m": RNG.standard_normal(c), "v": RNG.uniform(0.5, 2, c)}
    proto = make_model([helper.make_node("Relu", ["x"], ["r"]),
                        helper.make_node("BatchNormalization", ["r", "g", "b", "m", "v"], ["y"])],
                       [("x", FLOAT, ["N", c, 4])], [("y", FLOAT, ["N", c, 4])],
                       {k: v.astype(np.float32) for k, v in params.items()})
    ops, _ = run(proto, "fold-bn")
    assert ops == ["Relu", "Mul", "Add"]
    ops, _ = run(proto, "fold-bn(standalone=false)")
    assert ops == ["Relu", "BatchNormalization"]


def head_split_model(second_axis: int = 1, last_dim=8):
    """x[B,S,8] -> Reshape(x, Concat(Shape(x)[0], Shape(x)[second_axis], 2, 4)): the exporter's attention head split."""
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "i0"], ["d0"], name="g0", axis=0),
             helper.make_node("Gather", ["s", "i1"], ["d1"], name="g1", axis=0),
             helper.make_node("Unsqueeze", ["d0", "ax"], ["u0"], name="u0"),
             helper.make_node("Unsqueeze", ["d1", "ax"], ["u1"], name="u1"),
             helper.make_node("Concat", ["u0", "u1", "rest"], ["target"], name="cat", axis=0),
             helper.make_node("Reshape", ["x", "target"], ["r"], name="reshape"),
             helper.make_node("Relu", ["r"], ["y"], name="relu")]
    return make_model(nodes, [("x", FLOAT, ["B", "S", last_dim])], [("y", FLOAT, None)],
                      {"i0": np.array(0, np.int64), "i1": np.array(second_axis, np.int64), "ax": np.array([0], np.int64),
                       "rest": np.array([2, 4], np.int64)})


def test_dynamic_reshape_target_becomes_constant_and_holds_for_every_size():
    proto = head_split_model()
    result = effc.optimize(load_model(proto), "fuse(rules=[reshape-target]),dce", Context(verify=True))
    assert [n.op for n in result.model.graph.nodes] == ["Reshape", "Relu"]
    assert list(result.model.graph.nodes[0].inputs[1].values) == [0, 0, 2, 4]
    for shape in ((1, 3, 8), (4, 7, 8)):  # two sizes of the dynamic dims
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        np.testing.assert_array_equal(run_model(result.model, {"x": x})["y"], run_model(proto, {"x": x})["y"])


def test_dynamic_reshape_target_refuses_dims_that_do_not_line_up():
    # Shape(x)[2] (dynamic T) in position 1 is not "copy dim 1" (S): the rule must not fire
    result = effc.optimize(load_model(head_split_model(second_axis=2, last_dim="T")), "fuse(rules=[reshape-target],explain=true)")
    assert "Concat" in [n.op for n in result.model.graph.nodes]
    assert "not known to equal the data's dim 1" in " ".join(result.context.reports["fuse"]["not_fired"]["reshape-target"])


@pytest.mark.parametrize("layer", ["ConvTranspose", "Gemm", "GemmTransB"])
def test_fold_bn_into_conv_transpose_and_gemm(layer):
    rng = np.random.default_rng(3)
    bn_params = {"g": rng.uniform(0.5, 1.5, 4).astype(np.float32), "b": rng.standard_normal(4).astype(np.float32),
                 "m": rng.standard_normal(4).astype(np.float32), "v": rng.uniform(0.5, 2, 4).astype(np.float32)}
    if layer == "ConvTranspose":
        node = helper.make_node("ConvTranspose", ["x", "w"], ["h"], name="layer")
        inputs, outputs, w = [("x", FLOAT, [1, 3, 5, 5])], [("y", FLOAT, [1, 4, 7, 7])], rng.standard_normal((3, 4, 3, 3))
    else:
        trans = layer == "GemmTransB"
        node = helper.make_node("Gemm", ["x", "w", "c"], ["h"], name="layer", transB=int(trans))
        inputs, outputs = [("x", FLOAT, [2, 6])], [("y", FLOAT, [2, 4])]
        w = rng.standard_normal((4, 6) if trans else (6, 4))
        bn_params["c"] = rng.standard_normal(4).astype(np.float32)
    proto = make_model([node, helper.make_node("BatchNormalization", ["h", "g", "b", "m", "v"], ["y"], name="bn")],
                       inputs, outputs, {"w": w.astype(np.float32), **bn_params})
    result = effc.optimize(load_model(proto), "fold-bn", Context(verify=True))
    assert [n.op for n in result.model.graph.nodes] == [node.op_type]
