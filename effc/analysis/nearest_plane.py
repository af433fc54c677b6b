"""Babai's nearest-plane recursion: values from an allowed set (an integer grid, a codebook) for a weight, chosen
one input dimension at a time for the least output error on inputs of a given second moment H.

GPTQ (Frantar et al. 2022) is this recursion with the int8 grid (effc/passes/int8/gptq.py); weight sharing uses it
with a codebook's nearest entry (effc/passes/cluster/refine.py). `damping` is how far a rank-poor H is pulled
towards the identity, measured for GPTQ on ResNet-18.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.linalg import lapack

DAMPING = 0.01  # of the mean diagonal of H, as in the paper, when there are at least 4 rows per feature
MAX_DAMPING = 1.0
BLOCK = 128  # input dimensions updated lazily together (the paper's "lazy batch" updates)


def nearest_plane(weight: np.ndarray, hessian: np.ndarray, damping_fraction: float,
                  snap: Callable[[np.ndarray, int], np.ndarray]) -> np.ndarray:
    """Values [G, R, d] that `snap` allows for `weight` [G, R, d], chosen one input dimension at a time to
    minimise e^T H e per row (e = chosen - weight) for inputs of second moment `hessian` [G, d, d].

    `snap(column, k)` maps the wanted values of dimension k, [G, R], to allowed ones (it may overwrite its
    argument): the int8 grid for GPTQ, a codebook's nearest entry for weight sharing. Written as Babai's
    nearest-plane recursion, which picks the same values as GPTQ's updates through chol(H^-1) (Chen et al.
    2025) but needs only one Cholesky factorization: with H = U U^T (U upper), e^T H e = sum_k z_k^2,
    z_k = sum_{j<=k} U_jk e_j, so dimension k snaps the weight shifted by -sum_{j<k} U_jk e_j / U_kk, given
    the errors of the dimensions already chosen.
    """
    original = np.array(weight.transpose(0, 2, 1), np.float32)  # [G, d, R]: a dimension is a contiguous [G, R]
    upper = _upper_factor(hessian, damping_fraction)
    shifts = upper / np.diagonal(upper, axis1=1, axis2=2)[:, None, :]  # U_jk / U_kk
    q = np.zeros(original.shape, np.float32)
    errors = np.zeros(original.shape, np.float32)
    pending = np.zeros(original.shape, np.float32)  # sum_{j<k} U_jk e_j / U_kk, added as errors become known
    features = original.shape[1]
    for start in range(0, features, BLOCK):
        stop = min(start + BLOCK, features)
        for k in range(start, stop):
            q[:, k] = snap(np.subtract(original[:, k], pending[:, k]), k)
            np.subtract(q[:, k], original[:, k], out=errors[:, k])
            # the rest of this block sees the error now; later blocks get the whole block's in one product below
            pending[:, k + 1:stop] += shifts[:, k, k + 1:stop, None] * errors[:, k, None, :]
        pending[:, stop:] += np.matmul(shifts[:, start:stop, stop:].transpose(0, 2, 1), errors[:, start:stop])
    return q.transpose(0, 2, 1)


def _upper_factor(hessian: np.ndarray, damping_fraction: float) -> np.ndarray:
    """Per group, the upper-triangular U with U U^T = H + damping, [G, d, d] float32; dead inputs (zero
    diagonal) are decoupled from the others. U = J L J, with L the lower Cholesky factor of J H J (J reverses
    the order). float32 LAPACK: the damping keeps H conditioned well enough, and float64 factorizations of
    ResNet-18's 4608-wide layers cost seconds on two cores."""
    reversed_h = _damped(hessian, damping_fraction)[:, ::-1, ::-1]
    factors = np.empty(hessian.shape, np.float32)
    for g, h in enumerate(reversed_h):
        lower, info = lapack.spotrf(np.ascontiguousarray(h, np.float32), lower=1, clean=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"Cholesky factorization failed ({info})")
        factors[g] = lower[::-1, ::-1]
    return factors


def damping(features: int, rows: int) -> float:
    """The damping (a fraction of H's mean diagonal) for H estimated from `rows` rows of `features` inputs.

    With fewer than 4 rows per feature H is rank-poor and GPTQ hides error in directions the calibration rows
    barely span; a stronger pull to nearest rounding generalizes better. Chosen on 128 held-out images for
    ResNet-18's layers: 0.01 best at 4+ rows per feature, about 0.3 at 0.7, 1-3 at 0.34 (layer4, 32 images).
    """
    return min(MAX_DAMPING, DAMPING * max(1.0, 4.0 * features / max(rows, 1)) ** 2)


def _damped(hessian: np.ndarray, fraction: float) -> np.ndarray:
    h = np.array(hessian, np.float64)
    diagonal = np.diagonal(h, axis1=1, axis2=2).copy()
    dead = diagonal <= 0
    diagonal[dead] = 1.0
    h[np.broadcast_to(dead[:, :, None], h.shape) | np.broadcast_to(dead[:, None, :], h.shape)] = 0.0
    index = np.arange(h.shape[1])
    h[:, index, index] = diagonal + fraction * diagonal.mean(axis=1, keepdims=True)
    return h
