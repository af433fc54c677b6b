"""The int8 pass on hand-built graphs and the digits model: formats, fusion into integer kernels, refusals."""

from __future__ import annotations

import dataclasses

import json

import numpy as np
import onnx
import pytest
from onnx import helper

from effc import optimize
from effc.analysis.calibration_stats import RangeCollector
from effc.calib import CalibrationData
from effc.errors import EffcError
from effc.ir import load_model
from effc.onnx_runtime import run_model
from effc.pipeline.context import Context
from effc.zoo import get
from tests.conftest import AVX2_X86, FLOAT, VNNI_X86, make_model


def digits_accuracy(model, data) -> float:
    logits = run_model(model, {"input": data["input"].astype(np.float32)})["logits"]
    return float(np.mean(np.argmax(logits, -1) == data["labels"]))


@pytest.fixture(scope="module")
def digits():
    z = get("digits")
    return z, np.load(z.eval_path), CalibrationData.load(z.calib_path)


@pytest.mark.parametrize("calibrator", ["minmax", "percentile", "entropy", "mse"])
def test_digits_accuracy_within_half_a_point_for_every_calibrator(digits, calibrator):
    z, test, calibration = digits
    float_model = load_model(z.onnx_path)
    ctx = Context(calibration=calibration)
    quantized = optimize(load_model(z.onnx_path), f"int8(calibrator={calibrator})", ctx).model
    onnx.checker.check_model(quantized.to_proto())
    float_accuracy, int8_accuracy = digits_accuracy(float_model, test), digits_accuracy(quantized, test)
    assert int8_accuracy >= float_accuracy - 0.005, (calibrator, float_accuracy, int8_accuracy)
    assert quantized.input_specs() == float_model.input_specs()
    assert quantized.output_specs() == float_model.output_specs()
    report = ctx.reports["int8"]
    # every compute layer of the (BN-folded) float model is in the report, with a finite SQNR
    layer_ops = {"Conv", "Gemm", "Add", "MaxPool"}
    expected = {n.name for n in float_model.graph.nodes if n.op in layer_ops}
    assert {row["name"] for row in report["layers"]} | set(report["not_quantized"]) == expected
    assert all(row["sqnr_db"] is not None and row["sqnr_db"] > 20 for row in report["layers"])
    assert report["kernels"]["float"] == {} and report["kernels"]["integer"]["QLinearConv"] == 3
    json.dumps(report)  # the report is JSON-able


def conv_relu_model():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * np.linspace(0.1, 2.0, 8, dtype=np.float32)[:, None, None, None]
    b = rng.standard_normal(8).astype(np.float32)
    return make_model(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"], name="relu")],
        [("x", FLOAT, [1, 3, 8, 8])], [("y", FLOAT, [1, 8, 8, 8])], {"w": w, "b": b}), w, b


def calibration_for(shape, count=16, seed=1, mean=0.0):
    return CalibrationData({"x": (np.random.default_rng(seed).standard_normal((count, *shape)) + mean).astype(np.float32)})


def nodes_by_op(model, op):
    return [n for n in model.graph.nodes if n.op == op]


def test_conv_weights_int8_per_channel_bias_int32_activations_uint8():
    proto, w, b = conv_relu_model()
    ctx = Context(calibration=calibration_for([1, 3, 8, 8]), target=VNNI_X86)
    model = optimize(load_model(proto), "int8(calibrator=minmax,bias_correction=false)", ctx).model
    conv = nodes_by_op(model, "Conv")[0]
    weight_dq, bias_dq = conv.inputs[1].inputs[0], conv.inputs[2].inputs[0]
    q_w, s_w = (t.values for t in weight_dq.inputs)  # symmetric: the zero point is omitted (0)
    assert q_w.dtype == np.int8 and s_w.shape == (8,) and weight_dq.attrs["axis"] == 0
    np.testing.assert_allclose(s_w, np.abs(w).reshape(8, -1).max(axis=1) / 127, rtol=1e-6)
    x_dq = conv.inputs[0].inputs[0]
    s_x = float(x_dq.inputs[1].values)
    assert x_dq.inputs[2].values.dtype == np.uint8
    q_b, s_b = (t.values for t in bias_dq.inputs)  # no zero point: 0 by default
    assert q_b.dtype == np.int32
    np.testing.assert_allclose(s_b, s_x * s_w, rtol=1e-6)
    np.testing.assert_allclose(q_b * s_b, b, atol=float(s_b.max()))
    report = ctx.reports["int8"]
    assert report["kernels"]["integer"] == {"QLinearConv": 1} and report["kernels"]["float"] == {}
    assert report["layers"][0]["output"] == "y"  # the Relu is absorbed
    assert report["output_sqnr_db"] > 30


def test_targets_pick_activation_types():
    proto, _, _ = conv_relu_model()
    for target, spec, dtype, zero in [("arm", "int8", np.int8, None), (None, "int8(symmetric_activations=true)", np.int8, 0),
                                      ("x86", "int8", np.uint8, None)]:
        ctx = Context(calibration=calibration_for([1, 3, 8, 8]), target=target)
        model = optimize(load_model(proto), spec, ctx).model
        zero_points = [n.inputs[2].values for n in nodes_by_op(model, "QuantizeLinear")]
        assert zero_points and all(z.dtype == dtype for z in zero_points), target
        if zero is not None:
            assert all(int(z) == zero for z in zero_points)


def test_the_pass_reads_the_target_records_isa_not_its_name():
    proto, w, _ = conv_relu_model()
    signed = dataclasses.replace(VNNI_X86, isa=dataclasses.replace(VNNI_X86.isa, int8_activations="int8"))
    for target, dtype, qmax in [(VNNI_X86, np.uint8, 127), (signed, np.int8, 127), (AVX2_X86, np.uint8, 63)]:
        ctx = Context(calibration=calibration_for([1, 3, 8, 8]), target=target)
        model = optimize(load_model(proto), "int8(calibrator=minmax)", ctx).model
        assert all(n.inputs[2].values.dtype == dtype for n in nodes_by_op(model, "QuantizeLinear")), target.name
        weight = nodes_by_op(model, "Conv")[0].inputs[1].inputs[0]
        q, scales = weight.inputs[0].values, weight.inputs[1].values
        assert int(np.abs(q).max()) == qmax, target.name
        np.testing.assert_allclose(scales, np.abs(w).reshape(8, -1).max(axis=1) / qmax, rtol=1e-6)
        assert ctx.reports["int8"]["target"] == target.name and f"[-{qmax}, {qmax}]" in ctx.reports["int8"]["format"]["weights"]


def test_seven_bit_weights_keep_onnxruntime_accurate_where_its_products_saturate(digits):
    """On x86 without VNNI, ONNX Runtime's QLinearConv adds pairs of uint8 x int8 products in 16 bits (pmaddubsw):
    full-range weights saturate there. The host decides which ISA the default (no target) format is for."""
    from effc.targets import host_isa

    z, test, calibration = digits
    ctx = Context(calibration=calibration)
    optimize(load_model(z.onnx_path), "int8", ctx)
    expected = "[-63, 63]" if host_isa().int8_weight_bits == 7 else "[-127, 127]"
    assert expected in ctx.reports["int8"]["format"]["weights"]
    assert ctx.reports["int8"]["output_sqnr_db"] > 30  # 21 dB here with full-range weights on an AVX2-only host


def test_refuses_without_calibration_and_warns_with_random():
    proto, _, _ = conv_relu_model()
    with pytest.raises(EffcError, match="needs calibration data"):
        optimize(load_model(proto), "int8", Context())
    ctx = Context(allow_random_calibration=True)
    model = optimize(load_model(proto), "int8", ctx).model
    assert nodes_by_op(model, "QuantizeLinear") and any("random" in w for w in ctx.warnings)


@pytest.mark.parametrize("spec, reason", [("int8(accuracy_budget=1.5)", "accuracy_budget"), ("int8(calibrator=kl)", "calibrator"),
                                          ("int8(samples=0)", "samples"), ("int8(symmetric_activations=true,activations=uint8)", "symmetric")])
def test_bad_options_are_refused(spec, reason):
    proto, _, _ = conv_relu_model()
    with pytest.raises(EffcError, match=reason):
        optimize(load_model(proto), spec, Context(calibration=calibration_for([1, 3, 8, 8])))


def test_exclude_keeps_a_layer_float():
    proto, _, _ = conv_relu_model()
    ctx = Context(calibration=calibration_for([1, 3, 8, 8]))
    result = optimize(load_model(proto), "int8(exclude=[conv])", ctx)
    assert not nodes_by_op(result.model, "QuantizeLinear")
    assert ctx.reports["int8"]["not_quantized"] == {"conv": "excluded by the user"}


def clustered_model():
    """A MatMul whose weight is decoded from a codebook (Gather + Reshape on constants), as cluster writes it."""
    scales = np.array([0.01, 0.02, 0.05, 0.1], np.float32)
    codes = np.random.default_rng(0).integers(-127, 128, size=(6, 4))
    weight = (codes * scales).astype(np.float32)
    codebook = np.unique(weight).astype(np.float32)
    index = np.searchsorted(codebook, weight.ravel()).astype(np.int64)
    nodes = [helper.make_node("Gather", ["codebook", "index"], ["flat"], name="decode"),
             helper.make_node("Reshape", ["flat", "shape"], ["w"], name="reshape"),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    proto = make_model(nodes, [("x", FLOAT, ["N", 6])], [("y", FLOAT, ["N", 4])],
                       {"codebook": codebook, "index": index, "shape": np.array([6, 4], np.int64)})
    proto.metadata_props.add(key="effc.int8_weight_scale.w", value=json.dumps(scales.tolist()))
    return proto, weight


def test_decoded_weights_fold_and_use_the_scales_cluster_chose():
    proto, weight = clustered_model()
    ctx = Context(calibration=CalibrationData({"x": np.random.default_rng(2).standard_normal((32, 6)).astype(np.float32)}),
                  target=VNNI_X86)
    model = optimize(load_model(proto), "int8", ctx).model
    matmul = nodes_by_op(model, "MatMul")[0]
    dq = matmul.inputs[1].inputs[0]
    q, s, _ = (t.values for t in dq.inputs)
    np.testing.assert_array_equal(q * s, weight)  # on the int8 grid already: no further error
    assert ctx.reports["int8"]["layers"][0]["weight_sqnr_db"] is None  # infinite SQNR, reported as null
    assert not nodes_by_op(model, "Gather")


@pytest.mark.parametrize("rounding", ["nearest", "gptq"])  # gptq: the correction applies to its final weight error
def test_bias_correction_removes_the_mean_shift(rounding):
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((64, 8)) * 0.3).astype(np.float32)
    w[0, :] = 20.0  # a large weight per column makes the int8 step coarse for the others
    proto = make_model([helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc")], [("x", FLOAT, ["N", 64])], [("y", FLOAT, ["N", 8])],
                       {"w": w, "b": np.zeros(8, np.float32)})
    x = (rng.standard_normal((256, 64)) * 0.1 + 1.0).astype(np.float32)
    x[:, 0] = 0.0
    shifts = {}
    for correct in (False, True):
        ctx = Context(calibration=CalibrationData({"x": x}))
        model = optimize(load_model(proto), f"int8(calibrator=minmax,rounding={rounding},bias_correction={str(correct).lower()})", ctx).model
        error = run_model(model, {"x": x})["y"] - x @ w
        shifts[correct] = float(np.abs(error.mean(axis=0)).max())
    assert shifts[True] < 0.3 * shifts[False], shifts


def near_tie_model():
    """Logits that differ by little, so int8 noise flips many argmaxes: the accuracy budget must keep layers float."""
    rng = np.random.default_rng(4)
    w1 = rng.standard_normal((16, 32)).astype(np.float32)
    w2 = (np.ones((32, 4)) + rng.standard_normal((32, 4)) * 0.002).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"), helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")]
    return make_model(nodes, [("x", FLOAT, ["N", 16])], [("y", FLOAT, ["N", 4])], {"w1": w1, "w2": w2})


def test_accuracy_budget_keeps_sensitive_layers_float():
    x = np.random.default_rng(5).standard_normal((64, 16)).astype(np.float32)
    ctx = Context(calibration=CalibrationData({"x": x}))
    optimize(load_model(near_tie_model()), "int8", ctx)
    plain = ctx.reports["int8"]["top1_agreement"]
    assert plain < 0.95  # otherwise the test shows nothing
    ctx = Context(calibration=CalibrationData({"x": x}))
    model = optimize(load_model(near_tie_model()), "int8(accuracy_budget=0.02,sensitivity=true)", ctx).model
    report = ctx.reports["int8"]
    assert report["kept_float"] and report["top1_agreement"] >= 0.98
    assert all("alone_agreement" in row for row in report["layers"])
    assert [row["name"] for row in report["layers"] if row["kept_float"]] == report["kept_float"]
    assert nodes_by_op(model, "QuantizeLinear")  # the rest stays quantized


def test_streaming_histogram_matches_one_pass():
    data = np.random.default_rng(6).standard_normal((8, 20000)).astype(np.float32)  # one outlier in 160k: under 0.001%
    data[7, 0] = 40.0  # an outlier arriving late doubles the histogram range several times
    streamed, whole = RangeCollector(histogram=True), RangeCollector(histogram=True)
    for row in data:
        streamed.update(row[None])
    whole.update(data)
    assert streamed.range("minmax", 128) == whole.range("minmax", 128) == (float(data.min()), 40.0)
    for method in ("percentile", "entropy", "mse"):
        high = streamed.range(method, 128)[1]
        assert abs(high - whole.range(method, 128)[1]) <= 0.01 * high, method
        assert 3.0 < high < 40.0, (method, high)
    # percentile clips the lone outlier; mse keeps part of it (its clipping error outweighs 160k roundings), and
    # entropy, floored at mse's threshold, at least as much
    assert streamed.range("percentile", 128)[1] < 5.0
    assert streamed.range("entropy", 128)[1] >= streamed.range("mse", 128)[1]


@pytest.mark.zoo
def test_resnet18_fuses_into_integer_kernels_and_shrinks():
    z = get("resnet18")
    float_model = load_model(z.onnx_path)
    ctx = Context(calibration=CalibrationData.load(z.calib_path))
    model = optimize(load_model(z.onnx_path), "int8(samples=8,report_samples=2)", ctx).model
    kernels = ctx.reports["int8"]["kernels"]
    assert kernels["float"] == {}, kernels
    assert kernels["integer"]["QLinearConv"] == 20 and kernels["integer"]["QLinearAdd"] == 8
    assert model.serialized_size() <= 0.27 * float_model.serialized_size()
    assert model.output_specs() == float_model.output_specs()


def test_embedding_table_stored_int8_and_reported():
    rng = np.random.default_rng(7)
    table = rng.standard_normal((100, 32)).astype(np.float32)
    w = rng.standard_normal((32, 8)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], name="embed"), helper.make_node("MatMul", ["e", "w"], ["y"], name="mm")]
    proto = make_model(nodes, [("ids", onnx.TensorProto.INT64, ["N", 5])], [("y", FLOAT, ["N", 5, 8])], {"table": table, "w": w})
    ids = rng.integers(0, 100, size=(16, 5)).astype(np.int64)
    ctx = Context(calibration=CalibrationData({"ids": ids}))
    model = optimize(load_model(proto), "int8", ctx).model
    assert all(c.values.dtype != np.float32 or c.values.size < 100 for c in model.constants())
    rows = {row["name"]: row for row in ctx.reports["int8"]["layers"]}
    assert rows["embed"]["weight_sqnr_db"] > 35 and rows["mm"]["op"] == "MatMul"
    expected = table[ids] @ w
    got = run_model(model, {"ids": ids})["y"]
    assert 10 * np.log10(np.sum(expected**2) / np.sum((got - expected) ** 2)) > 30
    kept = optimize(load_model(proto), "int8(exclude=[embed])", Context(calibration=CalibrationData({"ids": ids}))).model
    assert any(c.values.dtype == np.float32 and c.values.shape == (100, 32) for c in kept.constants())




def test_entropy_threshold_never_clips_a_heavy_tail_below_the_squared_error_optimum():
    # magnitudes spread over decades (log-normal, sigma 2), like the PP-OCRv4 recogniser's activations: KL alone
    # clipped this tensor to 6% of its range (the tail folds into one bin at little KL cost); on the recogniser
    # such clipping made every line decode blank (tests/test_trained_defaults.py runs that model)
    rng = np.random.default_rng(9)
    x = (rng.choice([-1.0, 1.0], size=(256, 64)) * np.exp(rng.normal(-2.0, 2.0, size=(256, 64)))).astype(np.float32)
    collector = RangeCollector(histogram=True)
    collector.update(x)
    peak = float(np.abs(x).max())
    high, mse_high = collector.range("entropy", 128)[1], collector.range("mse", 128)[1]
    assert high >= mse_high >= 0.5 * peak, (high, mse_high, peak)
