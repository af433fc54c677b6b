"""Shared fixtures. Every pipeline run in tests also runs the ONNX checker after each pass.

Tiers: a test that compiles or tunes with TVM is marked `tvm`, one that needs a large zoo model `zoo`, one that takes
a minute or more `slow`; the fast tier (`-m "not tvm and not zoo and not slow"`) is the rest. The markers are enforced: an unmarked test that reaches a TVM compile,
a tuning run or a zoo build fails and says which marker it lacks.
"""

from __future__ import annotations

import contextlib

import numpy as np
import onnx
import pytest
import tvm  # imported here (once) so that tvm.compile can be guarded in tests not marked `tvm`
from onnx import TensorProto, helper, numpy_helper

import effc.backends.tvm.backend
import effc.backends.tvm.tuning
import effc.zoo
from effc.pipeline import pass_config
from effc.targets import ISA, Target

# ONNX Runtime-like targets with a known ISA, for tests whose numbers depend on it (the host's varies)
VNNI_X86 = Target("test-x86-vnni", "ort", "x86_64", isa=ISA(vector_bits=512, vector_registers=32, int8_dot=("avx512_vnni",),
                                                           int8_weight_bits=8, features=("avx512f", "avx512_vnni")))
AVX2_X86 = Target("test-x86-avx2", "ort", "x86_64", isa=ISA(vector_bits=256, vector_registers=16, int8_weight_bits=7,
                                                           features=("avx", "avx2", "fma")))
LARGE_ZOO = tuple(name for name in effc.zoo.ZOO_NAMES if name != "digits")


@pytest.fixture(autouse=True)
def strict_pass_checks():
    with pass_config(strict_checks=True):
        yield


class MissingMarker(BaseException):
    """Raised past every `except Exception` (the CLI's included), so the test fails with this message."""


def _refuse(marker: str, what: str):
    def refuse(*args, **kwargs):
        raise MissingMarker(f"this test {what}: mark it @pytest.mark.{marker} (see tests/conftest.py)")

    return refuse


GUARDED = ((tvm, "compile", "tvm", "compiles with TVM"),
           (effc.backends.tvm.backend.TVMBackend, "compile", "tvm", "compiles with TVM"),
           (effc.backends.tvm.tuning, "tune", "tvm", "tunes with TVM"),
           (effc.zoo, "ensure_built", "zoo", "needs a large zoo model"))


@contextlib.contextmanager
def _honest_markers(item):
    """While a test (and the fixtures it sets up) runs, what its missing markers promise it does not do raises."""
    saved = []
    for owner, name, marker, what in GUARDED:
        if item.get_closest_marker(marker) is None:
            saved.append((owner, name, getattr(owner, name)))
            setattr(owner, name, _refuse(marker, what))
    try:
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    with _honest_markers(item):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    with _honest_markers(item):
        yield


def zoo_params(names=effc.zoo.ZOO_NAMES):
    """Zoo model names as pytest params, the large ones marked `zoo`."""
    return [pytest.param(name, marks=pytest.mark.zoo) if name in LARGE_ZOO else name for name in names]


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
    from effc.ir import load_model
    from effc.onnx_runtime import random_inputs, run_model
    from effc.pipeline.context import Context

    model = load_model(proto)
    feeds = random_inputs(model.input_specs(), seed=1, dim_value=3)
    before = run_model(model, feeds)
    result = effc.optimize(model.copy(), spec, Context(verify=True))
    after = run_model(result.model, feeds)
    for name, value in before.items():
        np.testing.assert_allclose(after[name], value, rtol=rtol, atol=atol)
    return result
