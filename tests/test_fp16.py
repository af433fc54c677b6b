"""The fp16 pass: half-precision compute where safe, float32 interface and sensitive ops, checked on ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper

import effc
from effc.onnx_runtime import compare_outputs, run_model
from effc.zoo import get
from tests.conftest import FLOAT, make_model, zoo_params


def ops_by_type(model) -> dict[str, list]:
    found: dict[str, list] = {}
    for node in model.graph.nodes:
        found.setdefault(node.op, []).append(node)
    return found


@pytest.mark.parametrize("name", zoo_params())
def test_zoo_models_keep_their_interface_and_outputs(name):
    model = effc.load_model(get(name).onnx_path)
    ctx = effc.Context(measure_drift=True, drift_samples=4)
    result = effc.optimize(model.copy(), "default,fp16", ctx)
    half = result.model
    assert [(s.name, s.dtype) for s in half.input_specs()] == [(s.name, s.dtype) for s in model.input_specs()]
    assert [(s.name, s.dtype) for s in half.output_specs()] == [(s.name, s.dtype) for s in model.output_specs()]
    drift = result.ledger.rows[-1].drift
    assert drift.cosine >= 0.999 and drift.top1_agreement in (None, 1.0), drift
    assert result.ledger.rows[-1].stats.file_bytes < 0.52 * result.ledger.rows[0].stats.file_bytes
    if name == "encoder":  # the sensitive ops stay float32
        assert {"Softmax", "LayerNormalization"} <= set(ctx.reports["fp16"]["kept_float32"])
        for node in [*ops_by_type(half)["Softmax"], *ops_by_type(half)["LayerNormalization"]]:
            assert np.dtype(node.inputs[0].dtype) == np.float32


def test_keep_option_and_constants_too_large_for_half_stay_float32():
    rng = np.random.default_rng(0)
    big = np.full((4,), 1e6, np.float32)  # beyond float16's 65504
    proto = make_model([helper.make_node("MatMul", ["x", "w"], ["a"], name="mm"),
                        helper.make_node("Add", ["a", "big"], ["b"], name="add_big"),
                        helper.make_node("Relu", ["b"], ["y"], name="relu")],
                       [("x", FLOAT, [2, 4])], [("y", FLOAT, [2, 4])],
                       {"w": rng.standard_normal((4, 4)).astype(np.float32), "big": big})
    model = effc.optimize(effc.load_model(proto), "fp16(keep=[Relu])").model
    nodes = {n.name: n for n in model.graph.nodes}
    assert np.dtype(nodes["mm"].outputs[0].dtype) == np.float16
    assert np.dtype(nodes["add_big"].inputs[1].dtype) == np.float32  # kept: its constant does not fit
    assert np.dtype(nodes["relu"].outputs[0].dtype) == np.float32
    x = rng.standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(run_model(model, {"x": x})["y"], run_model(proto, {"x": x})["y"], rtol=1e-2, atol=1e-2)


def test_resize_scales_stay_float32():
    proto = make_model([helper.make_node("Mul", ["x", "two"], ["m"], name="mul"),
                        helper.make_node("Resize", ["m", "", "scales"], ["y"], name="resize", mode="nearest")],
                       [("x", FLOAT, [1, 2, 4, 4])], [("y", FLOAT, [1, 2, 8, 8])],
                       {"two": np.array(2, np.float32), "scales": np.array([1, 1, 2, 2], np.float32)})
    model = effc.optimize(effc.load_model(proto), "fp16").model
    resize = next(n for n in model.graph.nodes if n.op == "Resize")
    assert np.dtype(resize.inputs[0].dtype) == np.float16 and np.dtype(resize.inputs[2].dtype) == np.float32
    x = np.random.default_rng(1).standard_normal((1, 2, 4, 4)).astype(np.float32)
    assert compare_outputs([run_model(proto, {"x": x})], [run_model(model, {"x": x})]).max_rel < 1e-3


def test_tensors_a_subgraph_reads_stay_float32():
    then = helper.make_graph([helper.make_node("Identity", ["s"], ["o"])], "then", [],
                             [helper.make_tensor_value_info("o", FLOAT, [1, 2, 4, 4])])
    other = helper.make_graph([helper.make_node("Neg", ["s"], ["o2"])], "else", [],
                              [helper.make_tensor_value_info("o2", FLOAT, [1, 2, 4, 4])])
    proto = make_model([helper.make_node("Mul", ["x", "two"], ["m"], name="mul"),
                        helper.make_node("Relu", ["m"], ["s"], name="relu"),
                        helper.make_node("If", ["flag"], ["y"], name="if", then_branch=then, else_branch=other)],
                       [("x", FLOAT, [1, 2, 4, 4]), ("flag", onnx.TensorProto.BOOL, [])], [("y", FLOAT, [1, 2, 4, 4])],
                       {"two": np.array(2, np.float32)})
    model = effc.optimize(effc.load_model(proto), "fp16").model
    nodes = {n.name: n for n in model.graph.nodes}
    assert np.dtype(nodes["mul"].outputs[0].dtype) == np.float16 and np.dtype(nodes["relu"].outputs[0].dtype) == np.float32
    x = np.random.default_rng(1).standard_normal((1, 2, 4, 4)).astype(np.float32)
    for flag in (True, False):
        feeds = {"x": x, "flag": np.array(flag)}
        assert compare_outputs([run_model(proto, feeds)], [run_model(model, feeds)]).max_rel < 1e-3


def test_targets_without_half_compute_refuse_it():
    with pytest.raises(effc.EffcError, match="has no float16 compute"):
        effc.optimize(effc.load_model(get("digits").onnx_path), "fp16", effc.Context(target="ort"))
    cuda = effc.Context(target="cuda")
    assert effc.optimize(effc.load_model(get("digits").onnx_path), "fp16", cuda).ledger.rows[-1].changed
