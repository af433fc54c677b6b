"""1-D k-means: the numpy solver reaches scikit-learn's quality, every init works, edge cases and the lazy sklearn import."""

from __future__ import annotations

import builtins

import numpy as np
import pytest

from effc.errors import EffcError
from effc.passes.cluster.kmeans import assign, kmeans_1d


def inertia(x, codebook, indices):
    return float(np.sum((x - codebook[indices]) ** 2))


@pytest.mark.parametrize("init", ["kmeans++", "linear", "density"])
def test_numpy_kmeans_is_a_lloyd_fixed_point(init):
    x = np.random.default_rng(1).standard_normal(20000).astype(np.float32)
    codebook, indices = kmeans_1d(x, 16, init)
    assert codebook.shape == (16,) and indices.shape == x.shape and indices.max() < 16
    assert np.all(np.diff(codebook) > 0)
    assert np.array_equal(indices, assign(x.astype(np.float64), codebook.astype(np.float64)))
    # a fixed point: every centre is the mean of its cluster
    means = np.array([x[indices == j].mean() for j in range(16)])
    np.testing.assert_allclose(codebook, means, rtol=1e-4, atol=1e-5)
    # 16 levels of a Gaussian: Lloyd-Max distortion is about 0.0095 per value
    assert inertia(x, codebook, indices) / x.size < 0.0115


def test_numpy_matches_sklearn_quality():
    pytest.importorskip("sklearn")
    x = np.random.default_rng(2).laplace(size=(64, 32, 3, 3)).astype(np.float32)
    ours = inertia(x, *kmeans_1d(x, 8, "kmeans++"))
    theirs = inertia(x, *kmeans_1d(x, 8, "kmeans++", solver="sklearn"))
    assert ours <= theirs * 1.02


def test_fewer_distinct_values_than_k_is_exact():
    x = np.array([[0.5, -1.0], [0.5, 2.0]], np.float32)
    codebook, indices = kmeans_1d(x, 16)
    assert codebook.tolist() == [-1.0, 0.5, 2.0]
    assert np.array_equal(codebook[indices], x)


def test_sklearn_missing_is_a_user_error(monkeypatch):
    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    x = np.random.default_rng(3).standard_normal(500)
    with pytest.raises(EffcError, match="scikit-learn"):
        kmeans_1d(x, 4, solver="sklearn")
    codebook, _ = kmeans_1d(x, 4)  # the default needs nothing beyond numpy
    assert codebook.shape == (4,)
