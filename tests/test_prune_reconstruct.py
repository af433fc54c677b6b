"""Least-squares refitting pieces: normal equations, im2col patches against ONNX Runtime's Conv."""

from __future__ import annotations

import numpy as np
from onnx import helper

from effc.analysis.layer_inputs import conv_geometry, conv_patches, intermediate_session, sample_positions
from effc.analysis.least_squares import RIDGES, LeastSquares, validated_fit
from effc.ir import load_model
from tests.conftest import FLOAT, make_model


def test_least_squares_recovers_weights_and_bias_from_batches():
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((6, 3)), rng.standard_normal(3)
    system = LeastSquares(6, 3, bias=True)
    for _ in range(4):
        a = rng.standard_normal((50, 6))
        system.add(a, a @ w + b)
    got_w, got_b = system.solve(ridge=0.0)
    np.testing.assert_allclose(got_w, w, atol=1e-5)  # products are float32, like the activations
    np.testing.assert_allclose(got_b, b, atol=1e-5)
    assert system.relative_error(got_w, got_b) < 1e-6
    assert system.rows == 200


def test_relative_error_matches_a_direct_computation():
    rng = np.random.default_rng(1)
    a, y = rng.standard_normal((40, 5)), rng.standard_normal((40, 2))
    system = LeastSquares(5, 2, bias=False)
    system.add(a, y)
    w = rng.standard_normal((5, 2))
    direct = np.sum((a @ w - y) ** 2) / np.sum(y ** 2)
    assert abs(system.relative_error(w, None) - direct) < 1e-6 * direct


def test_too_few_rows_stay_near_the_prior():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((20, 2))
    system = LeastSquares(20, 2, bias=False)
    a = rng.standard_normal((3, 20))
    system.add(a, a @ w)
    fitted, _ = system.solve(ridge=1e-3, prior=(w + 0.01, None))
    assert np.max(np.abs(fitted - w)) < 0.02  # underdetermined: the prior fills the null space
    zero_prior, _ = system.solve(ridge=1e-3)
    assert np.max(np.abs(zero_prior - w)) > 0.5


def test_conv_patches_times_weights_match_onnx_runtime():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((5, 3, 3, 2)).astype(np.float32)
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="c", strides=[2, 1], pads=[1, 0, 2, 1], dilations=[1, 2])
    proto = make_model([conv],
                       [("x", FLOAT, [2, 3, 9, 7])], [("y", FLOAT, None)], {"w": w})
    model = load_model(proto)
    x = rng.standard_normal((2, 3, 9, 7)).astype(np.float32)
    y = intermediate_session(model, []).run(["y"], {"x": x})[0]
    positions = sample_positions(y.shape, 20, rng)
    geometry = conv_geometry(model.graph.nodes[0])
    patches = conv_patches(x, *geometry, positions)
    expected = y[positions[:, 0], :, positions[:, 1], positions[:, 2]]
    np.testing.assert_allclose(patches @ w.reshape(5, -1).T, expected, rtol=1e-4, atol=1e-4)
    assert len({tuple(p) for p in positions}) == 20


def test_conv_geometry_refuses_auto_pad():
    proto = make_model([helper.make_node("Conv", ["x", "w"], ["y"], name="c", auto_pad="SAME_UPPER")],
                       [("x", FLOAT, [1, 1, 4, 4])], [("y", FLOAT, None)], {"w": np.ones((1, 1, 3, 3), np.float32)})
    assert conv_geometry(load_model(proto).graph.nodes[0]) is None


def test_validated_fit_picks_the_ridge_on_held_out_rows():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((30, 2))

    def system(rows, noise):
        s = LeastSquares(30, 2, bias=False)
        a = rng.standard_normal((rows, 30))
        s.add(a, a @ w + noise * rng.standard_normal((rows, 2)))
        return s

    prior = (np.zeros((30, 2)), None)
    fitted, _, ridge, error = validated_fit(system(400, 0.0), system(100, 0.0), prior)
    assert ridge == RIDGES[0] and error < 1e-6 and np.allclose(fitted, w, atol=1e-3)
    held = system(10, 0.0)
    few, _, few_ridge, few_error = validated_fit(system(10, 0.0), held, (w + 0.05, None))
    assert few_ridge is not None and few_error < held.relative_error(w + 0.05, None)  # 10 rows for 30 features
    assert np.max(np.abs(few - w)) < 0.1  # the prior fills the null space: no blow-up
    noise_only = LeastSquares(30, 2, bias=False)
    a = rng.standard_normal((40, 30))
    noise_only.add(a, rng.standard_normal((40, 2)))
    held = LeastSquares(30, 2, bias=False)
    b = rng.standard_normal((40, 30))
    held.add(b, b @ w)
    kept, _, none, _ = validated_fit(noise_only, held, (w, None))
    assert none is None and kept is w  # nothing beats the prior on held-out rows


def test_validated_fit_without_held_out_rows_uses_a_fixed_ridge():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((4, 2))
    train = LeastSquares(4, 2, bias=False)
    a = rng.standard_normal((50, 4))
    train.add(a, a @ w)
    fitted, _, ridge, error = validated_fit(train, LeastSquares(4, 2, bias=False), (np.zeros((4, 2)), None))
    assert ridge == 1e-3 and error < 1e-4 and np.allclose(fitted, w, atol=1e-2)
