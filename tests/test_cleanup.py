"""Cleanup passes on tiny hand-built graphs: what changes, what must not, and outputs on ONNX Runtime."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import effc
from effc.errors import EffcError
from effc.ir import load_model
from effc.pipeline.context import Context
from tests.conftest import FLOAT, INT64, make_model, optimize_checked

RNG = np.random.default_rng(0)


def run(proto, spec):
    result = optimize_checked(proto, spec)
    return result, [n.op for n in result.model.graph.nodes]


def row(result, step):
    return next(r for r in result.ledger.rows if r.step.split("(")[0] == step)


def test_remove_identity_drops_each_noop_kind():
    nodes = [helper.make_node("Identity", ["x"], ["a"]),
             helper.make_node("Dropout", ["a"], ["b"]),
             helper.make_node("Cast", ["b"], ["c"], to=TensorProto.FLOAT),
             helper.make_node("Transpose", ["c"], ["d"], perm=[0, 1]),
             helper.make_node("Mul", ["d", "one"], ["e"]),
             helper.make_node("Add", ["e", "zero"], ["f"]),
             helper.make_node("Pad", ["f", "pads"], ["g"]),
             helper.make_node("Reshape", ["g", "shape"], ["h"]),
             helper.make_node("Relu", ["h"], ["y"])]
    proto = make_model(nodes, [("x", FLOAT, [2, 4])], [("y", FLOAT, [2, 4])],
                       {"one": np.float32(1), "zero": np.zeros(4, np.float32), "pads": np.zeros(4, np.int64),
                        "shape": np.array([2, 4], np.int64)})
    result, ops = run(proto, "remove-identity")
    assert ops == ["Relu"]
    assert row(result, "remove-identity").pass_stats["removed"] == 8


def test_remove_identity_keeps_broadcasting_add_and_graph_output_name():
    nodes = [helper.make_node("Add", ["x", "zero"], ["a"]),  # broadcasts [4] -> [3, 4]: not a no-op
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Identity", ["b"], ["y"])]
    proto = make_model(nodes, [("x", FLOAT, [4])], [("y", FLOAT, [3, 4])], {"zero": np.zeros((3, 4), np.float32)})
    result, ops = run(proto, "remove-identity")
    assert ops == ["Add", "Relu"]
    assert [o.name for o in result.model.graph.outputs] == ["y"]


def test_identity_between_input_and_output_stays():
    proto = make_model([helper.make_node("Identity", ["x"], ["y"])], [("x", FLOAT, [2])], [("y", FLOAT, [2])])
    result, ops = run(proto, "remove-identity")
    assert ops == ["Identity"] and not row(result, "remove-identity").changed


def test_fold_constants_folds_weight_math_but_not_dequantize_or_growth():
    w = RNG.standard_normal((4, 4)).astype(np.float32)
    codebook = RNG.standard_normal(16).astype(np.float32)
    idx = RNG.integers(0, 16, (64, 4)).astype(np.uint8)
    nodes = [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0]),
             helper.make_node("MatMul", ["x", "wt"], ["a"]),
             helper.make_node("DequantizeLinear", ["q", "s"], ["wq"]),
             helper.make_node("MatMul", ["a", "wq"], ["b"]),
             helper.make_node("Cast", ["idx"], ["idx64"], to=TensorProto.INT64),  # cluster-style decoder: 8x growth
             helper.make_node("Gather", ["codebook", "idx64"], ["wc"]),
             helper.make_node("Reshape", ["wc", "cshape"], ["wc2"]),
             helper.make_node("MatMul", ["b", "wc2"], ["y"])]
    proto = make_model(nodes, [("x", FLOAT, [2, 4])], [("y", FLOAT, [2, 16])],
                       {"w": w, "q": RNG.integers(-5, 5, (4, 4)).astype(np.int8), "s": np.float32(0.1),
                        "codebook": codebook, "idx": idx, "cshape": np.array([4, 64], np.int64)})
    _, ops = run(proto, "fold-constants")
    assert "Transpose" not in ops
    assert ops.count("DequantizeLinear") == 1 and ops.count("Gather") == 1 and ops.count("Cast") == 1


def test_cse_merges_shape_math_and_dedup_shares_constants():
    nodes = [helper.make_node("Shape", ["x"], ["s1"]), helper.make_node("Shape", ["x"], ["s2"]),
             helper.make_node("Gather", ["s1", "i0"], ["d1"], axis=0), helper.make_node("Gather", ["s2", "i0b"], ["d2"], axis=0),
             helper.make_node("Add", ["d1", "d2"], ["y"])]
    proto = make_model(nodes, [("x", FLOAT, ["N", 3])], [("y", INT64, [])],
                       {"i0": np.int64(0), "i0b": np.int64(0)})
    _, ops = run(proto, "dedup-initializers,cse")
    assert ops == ["Shape", "Gather", "Add"]


def test_cse_keeps_nodes_with_different_attributes():
    nodes = [helper.make_node("Softmax", ["x"], ["a"], axis=0), helper.make_node("Softmax", ["x"], ["b"], axis=1),
             helper.make_node("Add", ["a", "b"], ["y"])]
    proto = make_model(nodes, [("x", FLOAT, [3, 3])], [("y", FLOAT, [3, 3])])
    result, ops = run(proto, "cse")
    assert ops.count("Softmax") == 2 and not row(result, "cse").changed


def test_dce_removes_dead_branch(tiny_model):
    model = load_model(tiny_model)
    dead = model.graph.nodes[0].outputs[0]
    import onnx_graphsurgeon as gs
    model.graph.nodes.append(gs.Node("Relu", "dead", inputs=[dead], outputs=[gs.Variable("unused", np.float32)]))
    result = effc.optimize(model, "dce", Context())
    assert "dead" not in [n.name for n in result.model.graph.nodes] and row(result, "dce").changed
    again = effc.optimize(result.model, "dce", Context())
    assert not row(again, "dce").changed


def test_default_pipeline_reaches_a_fixed_point(tiny_model):
    result, ops = run(tiny_model, "default")
    assert ops == ["MatMul", "Relu"]
    again = effc.optimize(result.model, "default", Context())
    assert not any(r.changed for r in again.ledger.rows if r.step != "input")


def test_bad_option_is_refused():
    with pytest.raises(EffcError, match="fold-constants"):
        effc.optimize(load_model(make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", FLOAT, [1])],
                                            [("y", FLOAT, [1])])), "fold-constants(max_growth=abc)", Context())
