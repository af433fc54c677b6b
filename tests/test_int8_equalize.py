"""Cross-layer equalization before int8 (effc/passes/int8/equalize.py): exact in float, blocked where it would not be,
and worth its keep where a few channels have far larger ranges than the rest."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import helper

from effc import optimize
from effc.calib import CalibrationData
from effc.errors import EffcError
from effc.ir import load_model
from effc.ir.folding import fold_batchnorm, fold_weight_subgraphs
from effc.onnx_runtime import run_model
from effc.passes.int8.equalize import equalize, plan_equalization
from effc.pipeline.context import Context
from effc.zoo import get
from tests.conftest import FLOAT, make_model

SHAPE = [1, 4, 8, 8]


def conv(name, x, w, y, b=None, **attrs):
    return helper.make_node("Conv", [x, w] + ([b] if b else []), [y], name=name, pads=[1, 1, 1, 1], **attrs)


def weights(seed, *shape, outliers=()):
    """Random conv weights; output channels in `outliers` 30x larger (their activations dwarf the others)."""
    w = np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 0.3
    w[list(outliers)] *= 30.0
    return w


def residual_model(channels=8, outliers=(0,), damp=1.0):
    """x -> a -> Relu -> t; b(t) = u; v = t + u; y = Sigmoid(c(v)): one group {t, u, v}, producers a and b, consumers b and c.

    `damp` divides the consumers' weight columns of the outlier channels (every channel then matters to the output)."""
    c = channels
    nodes = [conv("a", "x", "wa", "ha", "ba"), helper.make_node("Relu", ["ha"], ["t"], name="relu"),
             conv("b", "t", "wb", "u", "bb"), helper.make_node("Add", ["t", "u"], ["v"], name="add"),
             conv("c", "v", "wc", "hc", "bc"), helper.make_node("Sigmoid", ["hc"], ["y"], name="out")]
    init = {"wa": weights(0, c, 4, 3, 3, outliers=outliers), "ba": np.full(c, 0.1, np.float32),
            "wb": weights(1, c, c, 3, 3) * 0.2, "bb": np.zeros(c, np.float32),
            "wc": weights(2, 6, c, 3, 3) * 0.2, "bc": np.zeros(6, np.float32)}
    for name in ("wb", "wc"):
        init[name][:, list(outliers)] /= damp
    return make_model(nodes, [("x", FLOAT, SHAPE)], [("y", FLOAT, [1, 6, 8, 8])], init)


def between_model(op_nodes):
    """x -> a -> [op_nodes: m -> n] -> c -> y, an outlier channel in a's output."""
    nodes = [conv("a", "x", "wa", "m", "ba"), *op_nodes, conv("c", "n", "wc", "hc"),
             helper.make_node("Sigmoid", ["hc"], ["y"], name="out")]
    init = {"wa": weights(0, 8, 4, 3, 3, outliers=(0,)), "ba": np.full(8, 0.1, np.float32), "wc": weights(2, 6, 8, 3, 3) * 0.2,
            "lo": np.array(0.0, np.float32), "hi": np.array(6.0, np.float32)}
    return make_model(nodes, [("x", FLOAT, SHAPE)], [("y", FLOAT, [1, 6, 8, 8])], init)


def depthwise_model():
    """x -> a -> depthwise (bias) -> c: the depthwise carries the group; its bias must follow the scale, not its weight."""
    nodes = [conv("a", "x", "wa", "m", "ba"), conv("dw", "m", "wd", "n", "bd", group=8), conv("c", "n", "wc", "hc"),
             helper.make_node("Sigmoid", ["hc"], ["y"], name="out")]
    init = {"wa": weights(0, 8, 4, 3, 3, outliers=(0, 5)), "ba": np.full(8, 0.1, np.float32), "wd": weights(3, 8, 1, 3, 3),
            "bd": np.linspace(-1, 1, 8).astype(np.float32), "wc": weights(2, 6, 8, 3, 3) * 0.2}
    return make_model(nodes, [("x", FLOAT, SHAPE)], [("y", FLOAT, [1, 6, 8, 8])], init)


def calibration(count=16, seed=1):
    return CalibrationData({"x": np.random.default_rng(seed).standard_normal((count, *SHAPE[1:])).astype(np.float32)})


def assert_same_outputs(before, after, feeds, rtol=1e-4):
    for feed in feeds:
        expected, got = run_model(before, feed), run_model(after, feed)
        for name, value in expected.items():
            scale = float(np.max(np.abs(value)))
            assert float(np.max(np.abs(got[name] - value))) <= rtol * scale, name


def equalized(proto, data=None):
    model = load_model(proto)
    data = data or calibration()
    report = equalize(model, data.batches(model.input_specs()))
    return model, report


def constant(model, node_name, index):
    return np.asarray(next(n for n in model.graph.nodes if n.name == node_name).inputs[index].values)


def test_residual_stream_is_rescaled_as_one_group_and_outputs_stay():
    proto = residual_model()
    model, report = equalized(proto)
    [group] = report["groups"]
    assert group["producers"] == ["a", "b"] and group["consumers"] == ["b", "c"] and group["channels"] == 8
    assert group["range_spread_before"] > 5 and group["range_spread_after"] < 0.5 * group["range_spread_before"]
    original = load_model(proto)
    assert not np.allclose(constant(model, "c", 1), constant(original, "c", 1))  # something was rescaled
    assert_same_outputs(original, model, list(calibration(4, seed=9).batches(model.input_specs())))
    json.dumps(report)


def test_depthwise_chain_scales_bias_not_weight_and_outputs_stay():
    proto = depthwise_model()
    model, report = equalized(proto)
    assert [g["producers"] for g in report["groups"]] == [["a"]]
    original = load_model(proto)
    np.testing.assert_array_equal(constant(model, "dw", 1), constant(original, "dw", 1))
    assert not np.allclose(constant(model, "dw", 2), constant(original, "dw", 2))
    assert_same_outputs(original, model, list(calibration(4, seed=9).batches(model.input_specs())))


@pytest.mark.parametrize("nodes, reason", [
    ([helper.make_node("Clip", ["m", "lo", "hi"], ["n"], name="relu6")], "Clip relu6 clips at a fixed bound"),
    ([helper.make_node("Sigmoid", ["m"], ["n"], name="sig")], "Sigmoid sig is not positively homogeneous"),
    ([helper.make_node("Relu", ["m"], ["r"], name="relu"), helper.make_node("Mul", ["r", "r"], ["n"], name="square")],
     "Mul square is not positively homogeneous"),
])
def test_non_homogeneous_ops_block_the_group(nodes, reason):
    proto = between_model(nodes)
    model, report = equalized(proto)
    assert report["groups"] == [] and report["blocked"]["a"] == reason
    original = load_model(proto)
    for name, index in [("a", 1), ("a", 2), ("c", 1)]:
        np.testing.assert_array_equal(constant(model, name, index), constant(original, name, index))


def test_relu_and_max_pool_between_are_exact():
    nodes = [helper.make_node("Clip", ["m", "lo"], ["r"], name="relu_as_clip"),  # Clip without a maximum is a Relu
             helper.make_node("MaxPool", ["r"], ["n"], name="pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    proto = between_model(nodes)
    model, report = equalized(proto)
    assert [g["consumers"] for g in report["groups"]] == [["c"]]
    assert_same_outputs(load_model(proto), model, list(calibration(4, seed=9).batches(model.input_specs())))


def test_graph_output_blocks_the_group():
    proto = residual_model()
    proto.graph.output.append(helper.make_tensor_value_info("v", FLOAT, [1, 8, 8, 8]))
    _, report = equalized(proto)
    assert report["groups"] == [] and report["blocked"]["a"] == "network output"


def int8_output_sqnr(proto, spec):
    data = calibration(32)
    ctx = Context(calibration=data)
    model = optimize(load_model(proto), spec, ctx).model
    feeds = list(calibration(16, seed=5).batches(model.input_specs()))
    signal = noise = 0.0
    reference = load_model(proto)
    for feed in feeds:
        expected, got = run_model(reference, feed)["y"], run_model(model, feed)["y"]
        signal += float(np.sum(expected.astype(np.float64) ** 2))
        noise += float(np.sum((got.astype(np.float64) - expected) ** 2))
    return 10 * np.log10(signal / noise), ctx.reports["int8"]


def test_equalization_lifts_int8_sqnr_when_a_few_channels_dwarf_the_rest():
    # measured on held-out samples: 22.8 dB without, 39.8 dB with (alpha 1/2), 25.3 dB at alpha 1 (the consumers'
    # weight columns of the outliers then dwarf their rows' other weights)
    proto = residual_model(channels=16, outliers=(0, 1), damp=30.0)
    plain, report = int8_output_sqnr(proto, "int8")
    assert report["equalized"]["groups"] == []  # off by default
    lifted, report = int8_output_sqnr(proto, "int8(equalize=true)")
    assert [g["producers"] for g in report["equalized"]["groups"]] == [["a", "b"]]
    assert lifted > plain + 10.0, (plain, lifted)
    strongest, _ = int8_output_sqnr(proto, "int8(equalize=true,equalize_alpha=1.0)")
    assert lifted > strongest + 6.0, (lifted, strongest)


def test_bad_alpha_is_refused():
    with pytest.raises(EffcError, match="equalize_alpha"):
        optimize(load_model(residual_model()), "int8(equalize=true,equalize_alpha=1.5)", Context(calibration=calibration()))


@pytest.mark.parametrize("name, groups", [("digits", 3), pytest.param("mobilenetv2", 7, marks=pytest.mark.zoo),
                                          pytest.param("resnet18", 12, marks=pytest.mark.zoo)])
def test_zoo_float_outputs_unchanged_by_equalization(name, groups):
    z = get(name)
    model = load_model(z.onnx_path)
    fold_weight_subgraphs(model)
    fold_batchnorm(model)
    reference = model.copy()
    report = equalize(model, CalibrationData.load(z.calib_path).batches(model.input_specs(), limit=4))
    assert len(report["groups"]) == groups
    if name == "mobilenetv2":  # the expanded channels sit between ReLU6s: only the linear bottlenecks are equalized
        assert all("Conv" in g["name"] and "conv.2" in g["name"] or g["name"].endswith("conv.1/Conv") for g in report["groups"])
        assert sum("clips at a fixed bound" in reason for reason in report["blocked"].values()) == 18
    feeds = list(CalibrationData.load(z.eval_path).batches(model.input_specs(), limit=2))
    assert_same_outputs(reference, model, feeds)
    assert plan_equalization(model).groups  # the rewritten model still traces into the same groups
