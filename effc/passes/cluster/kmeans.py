"""One-dimensional k-means for weight sharing: Lloyd iterations on sorted values, O(k log n) per iteration.

In one dimension every cluster is an interval between the midpoints of neighbouring centres, so after one
sort an iteration is a `searchsorted` for the k-1 boundaries and k segment sums read from a cumulative sum.
scikit-learn's KMeans gives the same fixed points far more slowly on large tensors (see benchmarks/bench_cluster.py);
it stays available as `solver="sklearn"`, imported only when asked for.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from effc.errors import EffcError

Init = Literal["kmeans++", "linear", "density"]
Solver = Literal["numpy", "sklearn"]
KMEANS_PP_SAMPLE = 4096  # k-means++ seeding looks at a random subsample; Lloyd then runs on every value


def kmeans_1d(values: np.ndarray, k: int, init: Init = "kmeans++", *, iterations: int = 500, seed: int = 0,
              solver: Solver = "numpy") -> tuple[np.ndarray, np.ndarray]:
    """Cluster the values of an array into at most k shared values.

    Returns (codebook float32 [k'] sorted ascending, k' <= k; indices int64 of the input's shape). Fewer than k
    centres come back when the array has fewer distinct values. Raises EffcError when sklearn is asked for
    and not installed.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    distinct = np.unique(x)
    if len(distinct) <= k:
        return distinct.astype(np.float32), np.searchsorted(distinct, x).reshape(np.shape(values))
    if solver == "sklearn":
        centres = _sklearn_centres(x, k, init, iterations, seed)
    else:
        centres = _lloyd_sorted(np.sort(x), initial_centres(x, k, init, seed), iterations)
    return centres.astype(np.float32), assign(x, centres).reshape(np.shape(values))


def assign(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest of the sorted `centres` for every value of x."""
    return np.searchsorted((centres[:-1] + centres[1:]) / 2, x)


def initial_centres(x: np.ndarray, k: int, init: Init, seed: int) -> np.ndarray:
    """k sorted starting centres: evenly spaced (linear), at evenly spaced quantiles (density), or k-means++."""
    if init == "linear":
        return np.linspace(x.min(), x.max(), k)
    if init == "density":
        return np.quantile(x, (np.arange(k) + 0.5) / k)
    rng = np.random.default_rng(seed)
    sample = x if len(x) <= KMEANS_PP_SAMPLE else rng.choice(x, KMEANS_PP_SAMPLE, replace=False)
    centres = [sample[rng.integers(len(sample))]]
    nearest = (sample - centres[0]) ** 2
    for _ in range(k - 1):
        total = nearest.sum()
        pick = rng.choice(len(sample), p=nearest / total) if total > 0 else rng.integers(len(sample))
        centres.append(sample[pick])
        nearest = np.minimum(nearest, (sample - sample[pick]) ** 2)
    return np.sort(np.asarray(centres))


def _lloyd_sorted(xs: np.ndarray, centres: np.ndarray, iterations: int) -> np.ndarray:
    sums = np.concatenate([[0.0], np.cumsum(xs)])
    centres = np.sort(centres)
    for _ in range(iterations):
        cuts = np.concatenate([[0], np.searchsorted(xs, (centres[:-1] + centres[1:]) / 2), [len(xs)]])
        counts = np.diff(cuts)
        means = np.diff(sums[cuts]) / np.maximum(counts, 1)
        updated = np.where(counts > 0, means, centres)  # an empty cluster keeps its centre
        if np.array_equal(updated, centres):
            break
        centres = np.sort(updated)
    return centres


def _sklearn_centres(x: np.ndarray, k: int, init: Init, iterations: int, seed: int) -> np.ndarray:
    try:
        from sklearn.cluster import KMeans
    except ImportError:
        raise EffcError("solver=sklearn needs scikit-learn (pip install scikit-learn); solver=numpy needs nothing") from None
    start = "k-means++" if init == "kmeans++" else initial_centres(x, k, init, seed).reshape(-1, 1)
    fitted = KMeans(n_clusters=k, init=start, n_init=1, max_iter=iterations, random_state=seed).fit(x.reshape(-1, 1))
    return np.sort(fitted.cluster_centers_.ravel())
