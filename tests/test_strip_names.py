"""strip-names: short tensor, Q/DQ and decoder names and no default attributes, same outputs; graph inputs/outputs
and compute nodes keep their names, so a profiled artifact still maps kernels to the source model's nodes;
subgraphs are renamed consistently."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import effc
from effc.ir import load_model
from effc.onnx_runtime import random_inputs, run_model
from effc.passes.lossless.strip_names import base36
from effc.pipeline.context import Context
from effc.zoo import get
from tests.conftest import FLOAT, make_model


def strip(model):
    return effc.optimize(model.copy(), "strip-names", Context(verify=True))


def assert_same_outputs(before, after, feeds_list):
    for feeds in feeds_list:
        for name, value in run_model(before, feeds).items():
            np.testing.assert_array_equal(run_model(after, feeds)[name], value)


def test_base36_counts_with_digits_then_letters():
    assert [base36(i) for i in (0, 9, 10, 35, 36, 1295)] == ["0", "9", "a", "z", "10", "zz"]


def test_intermediates_and_qdq_get_short_names_inputs_outputs_and_compute_nodes_keep_theirs():
    w = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    proto = make_model(
        [helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["x_quantized"], name="x/Q"),
         helper.make_node("DequantizeLinear", ["x_quantized", "scale", "zp"], ["x_dequantized"], name="x/DQ"),
         helper.make_node("MatMul", ["x_dequantized", "weight"], ["hidden"], name="mm"),
         helper.make_node("Relu", ["hidden"], ["0"], name="relu")],  # an output already named like a short name
        [("x", FLOAT, [2, 4])], [("0", FLOAT, [2, 3])],
        {"weight": w, "scale": np.array(0.05, np.float32), "zp": np.array(0, np.int8)})
    model = load_model(proto)
    result = strip(model)
    out = result.model
    assert result.ledger.rows[-1].changed
    assert [t.name for t in out.graph.inputs] == ["x"] and [t.name for t in out.graph.outputs] == ["0"]
    names = {n.op: n.name for n in out.graph.nodes}
    assert names["MatMul"] == "mm" and names["Relu"] == "relu"
    assert len(names["QuantizeLinear"]) <= 2 and len(names["DequantizeLinear"]) <= 2
    tensors = set(out.graph.tensors())
    assert max(len(n) for n in tensors - {"x"}) == 1 and len(tensors) == 8  # "0" stays the output's name alone
    assert_same_outputs(model, out, [random_inputs(model.input_specs(), seed=s) for s in range(3)])
    again = effc.optimize(out.copy(), "strip-names")
    assert not again.ledger.rows[-1].changed  # a second run finds the names already short: changed is exact


def test_digits_keeps_outputs_and_node_names():
    model = load_model(get("digits").onnx_path)
    out = strip(model).model
    onnx.checker.check_model(out.to_proto(), full_check=True)
    assert [n.name for n in out.graph.nodes] == [n.name for n in model.graph.nodes]
    assert out.input_specs() == model.input_specs() and out.output_specs() == model.output_specs()
    samples = np.load(get("digits").eval_path)["input"][:16]
    assert_same_outputs(model, out, [{"input": samples}, random_inputs(model.input_specs(), seed=1, dim_value=3)])
    assert out.serialized_size() < model.serialized_size()


def test_int8_digits_with_strip_names_is_at_most_027x_the_float_file():
    zoo = get("digits")
    ctx = Context(calibration=effc.CalibrationData.load(zoo.calib_path))
    result = effc.optimize(load_model(zoo.onnx_path), "int8,strip-names", ctx)
    proto = result.model.to_proto()
    onnx.checker.check_model(proto, full_check=True)
    assert proto.ByteSize() <= 0.27 * zoo.onnx_path.stat().st_size, proto.ByteSize()
    compute = [n.name for n in result.model.graph.nodes if n.op not in ("QuantizeLinear", "DequantizeLinear")]
    assert set(compute) <= {n.name for n in load_model(zoo.onnx_path).graph.nodes}


def test_clustered_digits_loses_its_decoder_names_and_default_attributes_not_its_outputs():
    zoo = get("digits")
    ctx = Context(calibration=effc.CalibrationData.load(zoo.calib_path))
    clustered = effc.optimize(load_model(zoo.onnx_path), "cluster(k=4,scope=tensor,min_size=64)", ctx).model
    result = strip(clustered)
    out = result.model
    onnx.checker.check_model(out.to_proto(), full_check=True)
    source_names = {n.name for n in load_model(zoo.onnx_path).graph.nodes}
    decoders = [n for n in out.graph.nodes if n.op in ("Cast", "Gather")]
    assert decoders and all(len(n.name) <= 2 for n in decoders)
    assert {n.name for n in out.graph.nodes if n.op not in ("Cast", "Gather")} <= source_names
    convs = [n for n in out.graph.nodes if n.op == "Conv"]
    assert convs and all(set(n.attrs) == {"kernel_shape", "pads"} for n in convs)  # strides, dilations, group: default
    assert all("alpha" not in n.attrs and "beta" not in n.attrs for n in out.graph.nodes if n.op == "Gemm")
    assert all(n.attrs.get("transB") == 1 for n in out.graph.nodes if n.op == "Gemm")  # not a default: kept
    assert result.ledger.rows[-1].pass_stats["default_attributes"] > 10
    samples = np.load(zoo.eval_path)["input"][:32]
    assert_same_outputs(clustered, out, [{"input": samples}])
    assert out.serialized_size() < clustered.serialized_size() - 500  # measured: 16,756 -> 13,772 B (tensor names too)
    assert not effc.optimize(out.copy(), "strip-names").ledger.rows[-1].changed


def if_model() -> onnx.ModelProto:
    """x -> Relu -> h; y = h + 1 if sum(h) > 0 else h * w, where both branches read h and the else branch reads the
    outer initializer w."""
    then_branch = helper.make_graph(
        [helper.make_node("Add", ["h", "one"], ["then_out"], name="then_add")], "then", [],
        [helper.make_tensor_value_info("then_out", FLOAT, [1, 4])], [numpy_helper.from_array(np.ones((1, 4), np.float32), "one")])
    else_branch = helper.make_graph(
        [helper.make_node("Mul", ["h", "w"], ["else_out"], name="else_mul")], "else", [],
        [helper.make_tensor_value_info("else_out", FLOAT, [1, 4])])
    return make_model(
        [helper.make_node("Relu", ["x"], ["h"], name="relu"),
         helper.make_node("ReduceSum", ["h"], ["total"], name="sum", keepdims=0),
         helper.make_node("Greater", ["total", "zero"], ["positive"], name="greater"),
         helper.make_node("If", ["positive"], ["y"], name="branch", then_branch=then_branch, else_branch=else_branch)],
        [("x", FLOAT, [1, 4])], [("y", FLOAT, [1, 4])],
        {"w": np.full((1, 4), 2.0, np.float32), "zero": np.array(0.0, np.float32)})


def test_tensors_read_from_subgraphs_are_renamed_consistently():
    model = load_model(if_model())
    out = strip(model).model
    proto = out.to_proto()
    onnx.checker.check_model(proto, full_check=True)
    branches = {a.name: a.g for n in proto.graph.node for a in n.attribute if a.type == onnx.AttributeProto.GRAPH}
    outer = {o for n in proto.graph.node for o in n.output}
    for branch in branches.values():
        (node,) = branch.node
        assert node.input[0] in outer and len(node.input[0]) == 1  # the outer h, under its new name
        assert all(len(name) == 1 for name in [*node.input, *node.output])
    assert [n.name for n in out.graph.nodes] == ["relu", "sum", "greater", "branch"]
    # both branches taken: x > 0 takes then (h + 1), x <= 0 takes else (h * w)
    assert_same_outputs(model, out, [{"x": np.full((1, 4), v, np.float32)} for v in (1.5, -1.0)])


@pytest.mark.tvm
def test_profiled_int8_artifact_maps_kernels_to_the_same_nodes_with_and_without_strip_names(tmp_path):
    from click.testing import CliRunner

    from effc.cli import cli
    from effc.profile.profiler import profile_artifact

    zoo = get("digits")
    mappings = []
    for spec in ("int8", "int8,strip-names"):
        out = tmp_path / f"{spec.replace(',', '_')}.effc"
        result = CliRunner().invoke(cli, ["compile", str(zoo.onnx_path), "--input-shape", "input=1,1,8,8", "--passes", spec,
                                          "--calib", str(zoo.calib_path), "-o", str(out), "--json"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        profile = profile_artifact(out, repeat=2, warmup=1)
        mappings.append({row.name: row.onnx_nodes for row in profile.kernels})
    plain, stripped = mappings
    assert stripped == plain
    mapped = {node for nodes in stripped.values() for node in nodes}
    assert {"/stem/stem.0/stem.0.0/Conv", "/head/head.2/Gemm"} <= mapped
    assert mapped <= {n.name for n in load_model(zoo.onnx_path).graph.nodes}
