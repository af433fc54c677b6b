"""Hostile bytes: random garbage, truncated protobufs and mutated copies of a valid model never give exit 3 or a
traceback from inspect, optimize or compile (a few examples for compile: it is the slow one)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from effc.cli import cli


def valid_model() -> bytes:
    x = helper.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", T.FLOAT, None)
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]), helper.make_node("Flatten", ["g"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x], [y], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


VALID = valid_model()


def hostile_bytes():
    garbage = st.binary(min_size=0, max_size=512)
    truncated = st.integers(1, len(VALID) - 1).map(lambda n: VALID[:n])

    def flip(edits):
        data = bytearray(VALID)
        for position, value in edits:
            data[position % len(data)] = value
        return bytes(data)

    mutated = st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8).map(flip)
    return st.one_of(garbage, truncated, mutated)


def run_on(tmp_path, data: bytes, *command):
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    result = CliRunner().invoke(cli, [c.format(m=path, o=tmp_path / "o") for c in command])
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.output)
    assert "Traceback" not in result.output
    return result


SETTINGS = dict(deadline=10_000, suppress_health_check=[HealthCheck.function_scoped_fixture], derandomize=True)


@settings(max_examples=60, **SETTINGS)
@given(data=hostile_bytes())
def test_inspect_never_crashes(tmp_path, data):
    run_on(tmp_path, data, "inspect", "{m}", "--no-layers")


@settings(max_examples=40, **SETTINGS)
@given(data=hostile_bytes())
def test_optimize_never_crashes(tmp_path, data):
    run_on(tmp_path, data, "optimize", "{m}", "-o", "{o}.onnx", "--verify")


@pytest.mark.tvm
@settings(max_examples=4, **{**SETTINGS, "deadline": 60_000})
@given(data=hostile_bytes())
def test_compile_never_crashes(tmp_path, data):
    run_on(tmp_path, data, "compile", "{m}", "-o", "{o}.effc")
