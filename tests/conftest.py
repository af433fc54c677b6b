"""Shared fixtures. Every pipeline run in tests also runs the ONNX checker after each pass."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import effc.pipeline


@pytest.fixture(autouse=True)
def strict_pass_checks(monkeypatch):
    monkeypatch.setattr(effc.pipeline, "STRICT_CHECKS", True)


def make_model(nodes, inputs, outputs, initializers=(), opset=17) -> onnx.ModelProto:
    """A model from helper nodes; `inputs`/`outputs` are (name, elem_type, shape) triples; initializers are name->array."""
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        [numpy_helper.from_array(np.asarray(a), name) for name, a in dict(initializers).items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64


@pytest.fixture
def tiny_model():
    """x[N,4] -> MatMul(w) -> Identity -> Relu -> y"""
    w = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    return make_model(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
         helper.make_node("Identity", ["h"], ["h2"], name="id"),
         helper.make_node("Relu", ["h2"], ["y"], name="relu")],
        [("x", FLOAT, ["N", 4])], [("y", FLOAT, None)], {"w": w})


def optimize_checked(proto: onnx.ModelProto, spec: str, *, rtol: float = 1e-5, atol: float = 1e-5):
    """Run `spec` with verification on; assert the outputs still match on ONNX Runtime (symbolic dims = 3)."""
    import effc
    from effc.context import Context
    from effc.ir import load_model
    from effc.runtime import random_inputs, run_model

    model = load_model(proto)
    feeds = random_inputs(model.input_specs(), seed=1, dim_value=3)
    before = run_model(model, feeds)
    result = effc.optimize(model.copy(), spec, Context(verify=True))
    after = run_model(result.model, feeds)
    for name, value in before.items():
        np.testing.assert_allclose(after[name], value, rtol=rtol, atol=atol)
    return result
