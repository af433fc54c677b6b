"""GPTQ weight rounding in the int8 pass: lower layer output error than nearest rounding, same scales and grid."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from effc import optimize
from effc.analysis.layer_inputs import conv_patches
from effc.calib import CalibrationData
from effc.errors import EffcError
from effc.ir import load_model
from effc.onnx_runtime import run_model
from effc.passes.int8.gptq import InputMoments, gptq_round, output_error
from effc.pipeline.context import Context
from tests.conftest import FLOAT, VNNI_X86, make_model


def smooth_inputs(count: int, channels: int, size: int, seed: int) -> np.ndarray:
    """Images whose neighbouring pixels and channels correlate (as real feature maps do): noise blurred and mixed."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((count, channels, size + 2, size + 2))
    blurred = sum(noise[:, :, i:i + size, j:j + size] for i in range(3) for j in range(3)) / 3.0
    mixing = np.eye(channels) + 0.5 * rng.standard_normal((channels, channels)) / np.sqrt(channels)
    return np.einsum("dc,nchw->ndhw", mixing, blurred).astype(np.float32)


def conv_model(groups: int):
    channels = 8
    rng = np.random.default_rng(0)
    w = rng.standard_normal((channels, channels // groups, 3, 3)).astype(np.float32)
    b = rng.standard_normal(channels).astype(np.float32) * 0.1
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1], group=groups)
    return make_model([node], [("x", FLOAT, ["N", channels, 10, 10])], [("y", FLOAT, ["N", channels, 10, 10])], {"w": w, "b": b}), w, b


def dequantized_weight(model) -> tuple[np.ndarray, np.ndarray]:
    """(int8 integers, per-channel scales) of the quantized Conv's weight."""
    conv = next(n for n in model.graph.nodes if n.op == "Conv")
    q, scales = (t.values for t in conv.inputs[1].inputs[0].inputs[:2])
    return q, scales


@pytest.mark.parametrize("groups", [1, 8])  # a plain Conv, and a depthwise one (one H per channel)
def test_gptq_lowers_layer_output_error_on_calibration_data(groups):
    proto, w, b = conv_model(groups)
    x = smooth_inputs(24, 8, 10, seed=1)
    weights, errors = {}, {}
    for rounding in ("nearest", "gptq"):
        ctx = Context(calibration=CalibrationData({"x": x}), target=VNNI_X86)
        model = optimize(load_model(proto), f"int8(rounding={rounding})", ctx).model
        q, scales = dequantized_weight(model)
        assert q.dtype == np.int8 and q.min() >= -127 and q.max() <= 127
        np.testing.assert_allclose(scales, np.abs(w).reshape(8, -1).max(axis=1) / 127, rtol=1e-6)  # scales unchanged
        weights[rounding] = q
        # the layer alone, float input, weight error only: what GPTQ minimises
        with_int8_weight = make_model(proto.graph.node, [("x", FLOAT, ["N", 8, 10, 10])], [("y", FLOAT, ["N", 8, 10, 10])],
                                      {"w": q * scales[:, None, None, None], "b": b})
        errors[rounding] = float(np.sum((run_model(with_int8_weight, {"x": x})["y"] - run_model(proto, {"x": x})["y"]) ** 2))
        expected, got = run_model(proto, {"x": x})["y"], run_model(model, {"x": x})["y"]
        assert 10 * np.log10(np.sum(expected ** 2) / np.sum((got - expected) ** 2)) > 30, rounding
        row = ctx.reports["int8"]["layers"][0]
        assert ctx.reports["int8"]["format"]["rounding"] == rounding
        assert (row["rounding_gain_db"] is None) == (rounding == "nearest")
    assert errors["gptq"] < 0.7 * errors["nearest"], errors
    assert np.any(weights["gptq"] != weights["nearest"])
    assert ctx.reports["int8"]["layers"][0]["rounding_gain_db"] > 1.5


def test_wide_gemm_is_rounded_in_feature_chunks_and_still_gains():
    rng = np.random.default_rng(6)
    features = 2304  # split into two chunks of 1152 (block-diagonal H)
    w = rng.standard_normal((8, features)).astype(np.float32)
    proto = make_model([helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1)], [("x", FLOAT, ["N", features])],
                       [("y", FLOAT, ["N", 8])], {"w": w})
    latent = rng.standard_normal((1200, 256))
    x = (latent @ rng.standard_normal((256, features)) / 16 + 0.1 * rng.standard_normal((1200, features))).astype(np.float32)
    errors = {}
    for rounding in ("nearest", "gptq"):
        ctx = Context(calibration=CalibrationData({"x": x}), target=VNNI_X86)
        model = optimize(load_model(proto), f"int8(rounding={rounding})", ctx).model
        gemm = next(n for n in model.graph.nodes if n.op == "Gemm")
        q, scales = (t.values for t in gemm.inputs[1].inputs[0].inputs[:2])
        assert q.shape == w.shape and q.dtype == np.int8
        errors[rounding] = float(np.sum((x @ (q * scales[:, None] - w).T) ** 2))
    assert errors["gptq"] < 0.5 * errors["nearest"], errors
    assert ctx.reports["int8"]["layers"][0]["rounding_gain_db"] > 3


def textbook_gptq(weight: np.ndarray, scales: np.ndarray, hessian: np.ndarray) -> np.ndarray:
    """The paper's algorithm for one group, column by column in float64: errors spread through chol(H^-1)."""
    h = hessian + 0.01 * np.mean(np.diag(hessian)) * np.eye(len(hessian))
    upper = np.linalg.cholesky(np.linalg.inv(h)).T
    work, q = weight.astype(np.float64).copy(), np.zeros(weight.shape)
    for i in range(weight.shape[1]):
        q[:, i] = np.clip(np.round(work[:, i] / scales), -127, 127)
        error = (work[:, i] - q[:, i] * scales) / upper[i, i]
        work[:, i:] -= error[:, None] * upper[i, i:][None, :]
    return q


def test_nearest_plane_recursion_picks_the_textbook_gptq_integers():
    rng = np.random.default_rng(2)
    d = 200  # more than one lazy block
    x = rng.standard_normal((600, d)) @ (np.eye(d) + 0.3 * rng.standard_normal((d, d)))
    hessian = x.T @ x / len(x)
    w = rng.standard_normal((16, d))
    w[0, 5] = 40.0  # a large weight: the other rows' grids are coarse and its row's rounding clamps at the ends
    scales = np.abs(w).max(axis=1) / 127
    expected = textbook_gptq(w, scales, hessian)
    got = gptq_round(w[None], scales[None], hessian[None])[0]
    assert np.mean(got != expected) < 0.01  # float32 against float64: a few ties may round the other way
    errors = [output_error((q * scales[:, None] - w)[None], hessian[None]) for q in (expected, got)]
    assert abs(errors[1] - errors[0]) < 0.01 * errors[0]
    nearest = np.clip(np.round(w / scales[:, None]), -127, 127)
    assert errors[1] < 0.8 * output_error((nearest * scales[:, None] - w)[None], hessian[None])


def test_input_moments_of_a_grouped_conv_are_its_patch_moments():
    proto, _, _ = conv_model(groups=2)
    node = next(n for n in load_model(proto).graph.nodes if n.op == "Conv")
    x = smooth_inputs(3, 8, 10, seed=3)
    moments = InputMoments(node, samples=3, rng=np.random.default_rng(0))  # 2048 rows wanted: every position is taken
    for image in x:
        moments.update(image[None])
    positions = np.stack(np.meshgrid(np.arange(3), np.arange(10), np.arange(10), indexing="ij"), -1).reshape(-1, 3)
    patches = conv_patches(x, [3, 3], [1, 1], [1, 1, 1, 1], [1, 1], positions).astype(np.float64)
    for g in range(2):
        group = patches[:, g * 36:(g + 1) * 36]
        np.testing.assert_allclose(moments.hessian()[g], group.T @ group / len(group), rtol=1e-4, atol=1e-6)
    assert moments.rows == 300


def test_unknown_rounding_is_refused_and_unsupported_layers_round_to_nearest():
    proto, _, _ = conv_model(groups=1)
    with pytest.raises(EffcError, match="rounding"):
        optimize(load_model(proto), "int8(rounding=stochastic)", Context(calibration=CalibrationData({"x": smooth_inputs(4, 8, 10, 0)})))
    w = np.random.default_rng(4).standard_normal((4, 3, 3)).astype(np.float32)  # a 1-D Conv: no im2col rows for GPTQ
    conv1d = make_model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv1d", pads=[1, 1])],
                        [("x", FLOAT, [1, 3, 16])], [("y", FLOAT, [1, 4, 16])], {"w": w})
    ctx = Context(calibration=CalibrationData({"x": np.random.default_rng(5).standard_normal((8, 1, 3, 16)).astype(np.float32)}))
    model = optimize(load_model(conv1d), "int8(rounding=gptq)", ctx).model
    report = ctx.reports["int8"]
    assert report["format"]["rounded_to_nearest"] == {"conv1d": "not a 2-D Conv with explicit padding"}
    assert report["layers"][0]["rounding_gain_db"] is None
    q, scales = dequantized_weight(model)
    np.testing.assert_array_equal(q, np.round(w / scales[:, None, None]))
