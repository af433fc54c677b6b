"""Models in the wild: dynamic dims written as -1, unused opset domains, scalar inputs, If subgraphs, unpinned dims.

Each class is reproduced on a small graph built here; the CLI must give exit 0 (or exit 2 with one line), never 3.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from effc.cli import cli
from effc.ir import load_model


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def save(graph: onnx.GraphProto, path, opsets=(("", 17),)) -> str:
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets]), path)
    return str(path)


def conv_relu(tmp_path, dims, opsets=(("", 13),)) -> str:
    x = helper.make_tensor_value_info("x", T.FLOAT, dims)
    y = helper.make_tensor_value_info("y", T.FLOAT, None)
    w = numpy_helper.from_array(np.random.default_rng(0).random((4, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                               helper.make_node("Relu", ["c"], ["y"])], "g", [x], [y], [w])
    return save(graph, tmp_path / "conv.onnx", opsets)


def ort_run(path, feeds):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options).run(None, feeds)


def test_dim_value_minus_one_is_dynamic(tmp_path):
    path = conv_relu(tmp_path, [-1, 3, -1, -1])
    assert load_model(path).input_specs()[0].shape == ("x_dim0", 3, "x_dim2", "x_dim3")
    pinned = invoke("inspect", path, "--input-shape", "x=1,3,48,192", "--json")
    assert pinned.exit_code == 0, pinned.output
    assert json.loads(pinned.stdout)["inputs"][0]["shape"] == [1, 3, 48, 192]
    out = tmp_path / "opt.onnx"
    result = invoke("optimize", path, "-o", out, "--verify")
    assert result.exit_code == 0, result.output
    x = np.random.default_rng(1).random((1, 3, 8, 10), np.float32)
    np.testing.assert_allclose(ort_run(out, {"x": x})[0], ort_run(path, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_declared_but_unused_domains_load(tmp_path):
    path = conv_relu(tmp_path, [1, 3, 8, 8], opsets=(("", 13), ("ai.onnx.training", 1), ("com.microsoft.nchwc", 1),
                                                     ("com.microsoft.experimental", 1)))
    assert invoke("inspect", path).exit_code == 0
    assert invoke("optimize", path, "-o", tmp_path / "o.onnx").exit_code == 0


def test_a_used_unknown_domain_is_still_refused(tmp_path):
    x = helper.make_tensor_value_info("x", T.FLOAT, [1])
    y = helper.make_tensor_value_info("y", T.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Magic", ["x"], ["y"], domain="org.example")], "g", [x], [y])
    result = invoke("inspect", save(graph, tmp_path / "m.onnx", (("", 17), ("org.example", 1))))
    assert result.exit_code == 2 and "org.example" in result.stderr


@pytest.fixture
def scalar_model(tmp_path):
    x = helper.make_tensor_value_info("x", T.FLOAT, [1, 4])
    s = helper.make_tensor_value_info("s", T.FLOAT, [])  # a sample rate, say
    y = helper.make_tensor_value_info("y", T.FLOAT, [1, 4])
    path = save(helper.make_graph([helper.make_node("Mul", ["x", "s"], ["y"])], "g", [x, s], [y]), tmp_path / "scalar.onnx")
    np.savez(tmp_path / "in.npz", x=np.arange(4, dtype=np.float32).reshape(1, 4), s=np.array(3.0, np.float32))
    np.save(tmp_path / "x.npy", np.arange(4, dtype=np.float32).reshape(1, 4))
    np.save(tmp_path / "s.npy", np.array(3.0, np.float32))
    return path


def test_scalar_input_in_verify(tmp_path, scalar_model):
    for extra in ([], ["--inputs", tmp_path / "in.npz"]):
        result = invoke("verify", scalar_model, scalar_model, *extra)
        assert result.exit_code == 0, result.output


@pytest.mark.tvm
def test_scalar_input_in_run_and_profile(tmp_path, scalar_model):
    art = tmp_path / "scalar.art"
    assert invoke("compile", scalar_model, "-o", art).exit_code == 0
    result = invoke("run", art, "--input", f"x={tmp_path / 'x.npy'}", "--input", f"s={tmp_path / 's.npy'}",
                    "--output-dir", tmp_path / "out")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "y.npy"), [[0, 3, 6, 9]])
    for extra in ([], ["--inputs", tmp_path / "in.npz"]):
        result = invoke("profile", art, "--repeat", 1, "--warmup", 0, *extra)
        assert result.exit_code == 0, result.output


def if_model_with_traced_subgraph_shapes(tmp_path) -> str:
    """An If whose then-branch keeps the shapes the exporter traced at batch 1 (value_info), as torch.onnx writes."""
    x = helper.make_tensor_value_info("x", T.FLOAT, ["N", 4])
    c = helper.make_tensor_value_info("c", T.BOOL, [])
    y = helper.make_tensor_value_info("y", T.FLOAT, None)
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    then = helper.make_graph([helper.make_node("MatMul", ["a", "w"], ["t0"]), helper.make_node("Relu", ["t0"], ["t"])],
                             "then", [], [helper.make_tensor_value_info("t", T.FLOAT, ["N", 4])],
                             value_info=[helper.make_tensor_value_info("t0", T.FLOAT, [1, 4])])
    other = helper.make_graph([helper.make_node("Neg", ["a"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", T.FLOAT, ["N", 4])])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["x1"]), helper.make_node("Relu", ["x1"], ["a"]),
                               helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
                              "g", [x, c], [y], [w])
    return save(graph, tmp_path / "if.onnx")


def test_lossless_passes_keep_if_subgraphs_loadable(tmp_path):
    path = if_model_with_traced_subgraph_shapes(tmp_path)
    out = tmp_path / "opt.onnx"
    result = invoke("optimize", path, "-o", out, "--input-shape", "x=2,4")
    assert result.exit_code == 0, result.output
    # ORT falls back to a lenient merge of conflicting subgraph shapes (with a warning); strict inference does not
    onnx.shape_inference.infer_shapes(onnx.load(out), strict_mode=True)
    x = np.array([[1, -2, 3, -4], [-1, 2, -3, 4]], np.float32)
    for branch in (True, False):
        got = ort_run(out, {"x": x, "c": np.array(branch)})[0]
        np.testing.assert_array_equal(got, np.maximum(x, 0) if branch else -np.maximum(x, 0))


def if_model_typed_only_for_some_sizes(tmp_path) -> str:
    """An If whose then-branch reshapes x to [2, -1]: fine for even lengths, the only ones the model is run at on that
    branch. With x pinned to an odd length ORT's load-time inference rejects the untaken branch (a sample-rate switch
    in a real VAD behaves the same way)."""
    x = helper.make_tensor_value_info("x", T.FLOAT, ["N"])
    c = helper.make_tensor_value_info("c", T.BOOL, [])
    y = helper.make_tensor_value_info("y", T.FLOAT, None)

    def branch(name: str, shape: list[int]) -> onnx.GraphProto:
        target = numpy_helper.from_array(np.array(shape, np.int64), f"{name}_shape")
        return helper.make_graph([helper.make_node("Reshape", ["x1", f"{name}_shape"], [f"{name}_y"])], name, [],
                                 [helper.make_tensor_value_info(f"{name}_y", T.FLOAT, ["R", "C"])], [target])

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["x1"]),
                               helper.make_node("If", ["c"], ["y"], then_branch=branch("then", [2, -1]),
                                                else_branch=branch("else", [1, -1]))], "g", [x, c], [y])
    return save(graph, tmp_path / "if_sizes.onnx")


def test_pins_that_orts_branch_inference_rejects_stay_out_of_the_written_model(tmp_path):
    path = if_model_typed_only_for_some_sizes(tmp_path)
    model = load_model(path, {"x": [3]})
    assert model.input_specs()[0].shape == (3,)  # the passes and TVM still see the pinned size
    out = tmp_path / "opt.onnx"
    np.savez(tmp_path / "calib.npz", x=np.arange(-3, 3, dtype=np.float32).reshape(2, 3), c=np.array([False, False]))
    result = invoke("optimize", path, "-o", out, "--input-shape", "x=3", "--verify", "--calib", tmp_path / "calib.npz")
    assert result.exit_code == 0, result.output
    assert onnx.load(out).graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    x = np.array([1, -2, 3], np.float32)
    np.testing.assert_array_equal(ort_run(out, {"x": x, "c": np.array(False)})[0], np.maximum(x, 0)[None])
    # a model ORT accepts pinned keeps its pins
    even = tmp_path / "even.onnx"
    assert invoke("optimize", path, "-o", even, "--input-shape", "x=4").exit_code == 0
    assert onnx.load(even).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4


def strided_detector(tmp_path, stride: int) -> str:
    """Down by `stride`, up by `stride`, add the input: runs only when H and W are multiples of `stride`."""
    x = helper.make_tensor_value_info("x", T.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("y", T.FLOAT, None)
    scales = numpy_helper.from_array(np.array([1, 1, stride, stride], np.float32), "scales")
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[stride, stride], strides=[stride, stride]),
             helper.make_node("Resize", ["p", "", "scales"], ["u"], mode="nearest"),
             helper.make_node("Add", ["u", "x"], ["y"])]
    return save(helper.make_graph(nodes, "det", [x], [y], [scales]), tmp_path / f"det{stride}.onnx")


def test_verify_picks_image_sizes_a_detector_runs_at(tmp_path):
    path = strided_detector(tmp_path, 32)
    assert invoke("verify", path, path).exit_code == 0
    assert invoke("optimize", path, "-o", tmp_path / "o.onnx", "--verify").exit_code == 0


def test_verify_names_the_dims_to_pin_when_no_size_fits(tmp_path):
    path = strided_detector(tmp_path, 7)
    for args in (["verify", path, path], ["optimize", path, "-o", tmp_path / "o.onnx", "--verify"]):
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        assert "x[2]=H" in result.stderr and "--input-shape" in result.stderr
    assert not (tmp_path / "o.onnx").exists()
    pinned = invoke("verify", path, path, "--input-shape", "x=1,3,14,14")
    assert pinned.exit_code == 0, pinned.output


def test_inspect_says_macs_assume_1_for_unpinned_dims(tmp_path):
    path = conv_relu(tmp_path, ["N", 3, "H", "W"])
    result = invoke("inspect", path, "--json")
    assert json.loads(result.stdout)["macs_assume_1_for"] == ["x[0]=N", "x[2]=H", "x[3]=W"]
    assert "MACs assume 1" in invoke("inspect", path).stdout
    pinned = json.loads(invoke("inspect", path, "--json", "--input-shape", "x=1,3,8,8").stdout)
    assert pinned["macs_assume_1_for"] == [] and pinned["macs"] == 4 * 27 * 64


@pytest.mark.zoo
def test_a_real_model_with_dim_value_minus_1_calibrates_and_quantizes():
    """The PP-OCRv4 direction classifier (rapidocr_onnxruntime's wheel) declares its batch as dim_value -1."""
    pytest.importorskip("rapidocr_onnxruntime")
    import effc
    from effc.calib import CalibrationData
    from effc.onnx_runtime import run_model
    from effc.zoo import ocr

    entry = ocr.get("ocr_cls")
    declared = onnx.load(str(entry.onnx_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0]
    assert declared.HasField("dim_value") and declared.dim_value == -1
    model = effc.load_model(str(entry.onnx_path))
    assert isinstance(model.input_specs()[0].shape[0], str)  # a symbolic dim, not "fixed at -1"
    ctx = effc.Context(calibration=CalibrationData.load(entry.calib_path))
    quantized = effc.optimize(model, "default,int8", ctx).model
    data = np.load(entry.eval_path)
    x = data["x"][:16]
    reference = run_model(str(entry.onnx_path), {"x": x})
    candidate = run_model(quantized, {"x": x})
    name = next(iter(reference))
    agree = np.mean(reference[name].argmax(-1) == candidate[name].argmax(-1))
    assert agree >= 0.8, agree  # calibrated: uncalibrated int8 collapsed to one class (48%)
