"""The importer: sources, upgrades, old conventions, pinned shapes, and every malformed input it must refuse."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import effc.ir.model
from effc import EffcError, load_model
from effc.onnx_runtime import run_model
from tests.conftest import FLOAT, INT64, make_model


def test_loads_path_bytes_and_proto(tmp_path, tiny_model):
    path = tmp_path / "m.onnx"
    onnx.save(tiny_model, path)
    for source in (path, str(path), path.read_bytes(), tiny_model):
        model = load_model(source)
        assert [n.op for n in model.graph.nodes] == ["MatMul", "Identity", "Relu"]
        assert model.opset == effc.ir.CANONICAL_OPSET


def test_round_trip_keeps_outputs(tmp_path, tiny_model):
    x = np.random.default_rng(1).standard_normal((3, 4)).astype(np.float32)
    model = load_model(tiny_model)
    model.save(tmp_path / "out.onnx")
    again = load_model(tmp_path / "out.onnx")
    expected = run_model(tiny_model, {"x": x})["y"]
    np.testing.assert_array_equal(run_model(again, {"x": x})["y"], expected)


def test_external_data(tmp_path, tiny_model):
    path = tmp_path / "ext.onnx"
    weights = numpy_helper.to_array(tiny_model.graph.initializer[0])
    onnx.save(tiny_model, path, save_as_external_data=True, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").exists()
    model = load_model(path)
    w = next(c for c in model.constants() if c.name == "w")
    np.testing.assert_array_equal(w.values, weights)


def test_missing_external_data_is_a_clear_error(tmp_path, tiny_model):
    path = tmp_path / "ext.onnx"
    onnx.save(tiny_model, path, save_as_external_data=True, location="weights.bin", size_threshold=0)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(EffcError, match="external data"):
        load_model(path)


def test_initializers_listed_as_inputs_become_constants(tiny_model):
    old = onnx.ModelProto()
    old.CopyFrom(tiny_model)
    old.graph.input.append(helper.make_tensor_value_info("w", FLOAT, [4, 3]))
    model = load_model(old)
    assert [s.name for s in model.input_specs()] == ["x"]


def test_old_opset_is_upgraded_and_computes_the_same():
    # opset 7 BatchNormalization/Reshape semantics, upgraded to the canonical opset
    scale = np.array([1.0, 2.0], np.float32)
    bias = np.array([0.5, -0.5], np.float32)
    mean = np.array([0.1, 0.2], np.float32)
    var = np.array([1.0, 4.0], np.float32)
    m = make_model(
        [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], name="bn"),
         helper.make_node("Relu", ["y"], ["z"], name="relu")],
        [("x", FLOAT, [1, 2, 3, 3])], [("z", FLOAT, [1, 2, 3, 3])],
        {"s": scale, "b": bias, "m": mean, "v": var}, opset=7)
    m.ir_version = 3  # old exporters also list initializers as graph inputs
    for name, value in {"s": scale, "b": bias, "m": mean, "v": var}.items():
        m.graph.input.append(helper.make_tensor_value_info(name, FLOAT, list(value.shape)))
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 3)).astype(np.float32)
    model = load_model(m)
    assert model.opset == effc.ir.CANONICAL_OPSET
    expected = (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5) * scale[:, None, None] + bias[:, None, None]
    np.testing.assert_allclose(run_model(model, {"x": x})["z"], np.maximum(expected, 0), rtol=1e-5, atol=1e-5)


def test_opset_older_than_7_is_refused(tiny_model):
    tiny_model.opset_import[0].version = 6
    with pytest.raises(EffcError, match="older than 7"):
        load_model(tiny_model)


def test_dynamic_dims_stay_symbolic_and_can_be_pinned(tiny_model):
    assert load_model(tiny_model).input_specs()[0].shape == ("N", 4)
    pinned = load_model(tiny_model, {"x": [2, 4]})
    assert pinned.input_specs()[0].shape == (2, 4)
    assert pinned.output_specs()[0].shape == (2, 3)


@pytest.mark.parametrize("shapes, message", [
    ({"nope": [1, 4]}, "no input named 'nope'"),
    ({"x": [1, 4, 1]}, "rank 2"),
    ({"x": [1, 5]}, "fixed at 4"),
    ({"x": [0, 4]}, "positive"),
])
def test_bad_pinned_shapes(tiny_model, shapes, message):
    with pytest.raises(EffcError, match=message):
        load_model(tiny_model, shapes)


def test_shape_subgraphs_fold_once_shapes_are_static():
    # Reshape(x, Concat(Shape(x)[0], -1)): a typical exporter shape computation
    m = make_model(
        [helper.make_node("Shape", ["x"], ["s"], name="shape"),
         helper.make_node("Gather", ["s", "zero"], ["n"], name="gather", axis=0),
         helper.make_node("Unsqueeze", ["n", "axes"], ["n1"], name="unsq"),
         helper.make_node("Concat", ["n1", "minus1"], ["target"], name="concat", axis=0),
         helper.make_node("Reshape", ["x", "target"], ["y"], name="reshape")],
        [("x", FLOAT, ["N", 2, 3])], [("y", FLOAT, None)],
        {"zero": np.array(0, np.int64), "axes": np.array([0], np.int64), "minus1": np.array([-1], np.int64)})
    assert len(load_model(m).graph.nodes) == 5  # dynamic batch: nothing to fold
    pinned = load_model(m, {"x": [4, 2, 3]})
    assert [n.op for n in pinned.graph.nodes] == ["Reshape"]
    x = np.ones((4, 2, 3), np.float32)
    assert run_model(pinned, {"x": x})["y"].shape == (4, 6)


def test_unnamed_and_duplicate_node_names_are_made_unique():
    m = make_model([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["b"], name="r"),
                    helper.make_node("Relu", ["b"], ["c"], name="r")],
                   [("x", FLOAT, [2])], [("c", FLOAT, [2])])
    names = [n.name for n in load_model(m).graph.nodes]
    assert len(set(names)) == 3 and all(names)


# ---------------------------------------------------------------- malformed input


def test_missing_file(tmp_path):
    with pytest.raises(EffcError, match="no such file"):
        load_model(tmp_path / "absent.onnx")


def test_not_onnx(tmp_path):
    path = tmp_path / "text.onnx"
    path.write_text("this is not a model\n" * 10)
    with pytest.raises(EffcError, match="not an ONNX model"):
        load_model(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.onnx"
    path.write_bytes(b"")
    with pytest.raises(EffcError, match="empty file"):
        load_model(path)


def test_truncated_protobuf(tmp_path, tiny_model):
    data = tiny_model.SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EffcError, match="not an ONNX model|truncated"):
        load_model(path)


def test_corrupted_protobuf(tmp_path, tiny_model):
    data = bytearray(tiny_model.SerializeToString())
    for i in range(0, len(data), 7):
        data[i] ^= 0xFF
    path = tmp_path / "bad.onnx"
    path.write_bytes(bytes(data))
    with pytest.raises(EffcError):
        load_model(path)


def test_dangling_edge():
    m = make_model([helper.make_node("Add", ["x", "ghost"], ["y"], name="add")], [("x", FLOAT, [2])], [("y", FLOAT, [2])])
    with pytest.raises(EffcError, match="'add'.*'ghost'.*dangling"):
        load_model(m)


def test_cycle():
    m = make_model([helper.make_node("Add", ["x", "b"], ["a"], name="first"), helper.make_node("Relu", ["a"], ["b"], name="second")],
                   [("x", FLOAT, [2])], [("a", FLOAT, [2])])
    with pytest.raises(EffcError, match="cycle"):
        load_model(m)


def test_duplicate_output():
    m = make_model([helper.make_node("Relu", ["x"], ["y"], name="one"), helper.make_node("Neg", ["x"], ["y"], name="two")],
                   [("x", FLOAT, [2])], [("y", FLOAT, [2])])
    with pytest.raises(EffcError, match="produced twice"):
        load_model(m)


def test_unsorted_but_valid_graph_is_accepted():
    m = make_model([helper.make_node("Relu", ["a"], ["b"], name="second"), helper.make_node("Neg", ["x"], ["a"], name="first")],
                   [("x", FLOAT, [2])], [("b", FLOAT, [2])])
    model = load_model(m)
    assert [n.name for n in model.graph.nodes] == ["first", "second"]


def test_unknown_opset_domain(tiny_model):
    tiny_model.opset_import.append(helper.make_opsetid("com.example.secret", 1))
    tiny_model.graph.node[0].domain = "com.example.secret"  # a declared domain no node uses is dropped (test_wild_import)
    with pytest.raises(EffcError, match="unknown opset domain 'com.example.secret'"):
        load_model(tiny_model)


def test_invalid_op_is_named():
    m = make_model([helper.make_node("NoSuchOp", ["x"], ["y"], name="weird")], [("x", FLOAT, [2])], [("y", FLOAT, [2])])
    with pytest.raises(EffcError, match="invalid model.*NoSuchOp"):
        load_model(m)


def test_over_2gb_without_external_data_is_refused(tmp_path, tiny_model, monkeypatch):
    path = tmp_path / "big.onnx"
    onnx.save(tiny_model, path)
    monkeypatch.setattr(effc.ir.model, "TWO_GB", 64)  # stand-in for a >2 GB file: the check is on the file size
    with pytest.raises(EffcError, match="larger than 2 GB"):
        load_model(path)


def test_large_models_are_saved_with_external_data(tmp_path, tiny_model, monkeypatch):
    monkeypatch.setattr(effc.ir.model, "TWO_GB", 2**24 + 16)  # anything over 16 bytes of weights counts as "large"
    model = load_model(tiny_model)
    model.save(tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx.data").exists()
    monkeypatch.undo()
    reloaded = load_model(tmp_path / "big.onnx")
    x = np.ones((2, 4), np.float32)
    np.testing.assert_array_equal(run_model(reloaded, {"x": x})["y"], run_model(tiny_model, {"x": x})["y"])


def test_int64_inputs_are_kept():
    m = make_model([helper.make_node("Gather", ["table", "ids"], ["y"], name="g", axis=0)],
                   [("ids", INT64, ["B"])], [("y", FLOAT, None)], {"table": np.arange(12, dtype=np.float32).reshape(6, 2)})
    spec = load_model(m).input_specs()[0]
    assert spec.dtype == np.int64 and spec.shape == ("B",)
