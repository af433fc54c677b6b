"""Least-squares refitting of a linear layer from calibration activations (He et al. 2017, ThiNet).

A Conv or Gemm computes y = W x + b over input patches. Given the patches its (changed) inputs
produce and the outputs it should produce, `LeastSquares` accumulates the normal equations over
batches (memory bounded by the feature count, not the data) and solves for W and b with a small
ridge term; `validated_fit` picks the ridge on held-out rows. Pruning's refit, cluster's codebook refit and
int8's GPTQ rounding all sample their rows the same way (`rows_to_sample`, layer_inputs.sample_input_rows).
"""

from __future__ import annotations

import numpy as np

ROWS_PER_LAYER = 8192  # sampled output positions per layer: bounds the time and memory of a refit


def rows_to_sample(features: int) -> int:
    """Input rows to sample for a least-squares problem over `features` inputs: 4 per feature, within [2048, ROWS_PER_LAYER]."""
    return min(ROWS_PER_LAYER, max(2048, 4 * features))


class LeastSquares:
    """min ||A W + 1 b - Y||^2 + ridge * ||(W, b) - prior||^2, accumulated batch by batch."""

    def __init__(self, features: int, outputs: int, *, bias: bool):
        width = features + (1 if bias else 0)
        self.bias = bias
        self.ata = np.zeros((width, width))
        self.aty = np.zeros((width, outputs))
        self.yty = np.zeros(outputs)
        self.rows = 0

    def add(self, a: np.ndarray, y: np.ndarray) -> None:
        """Add rows: `a` [rows, features] inputs, `y` [rows, outputs] targets."""
        # float32 products (the data is float32 anyway), float64 sums across batches
        a = np.asarray(a, dtype=np.float32)
        if self.bias:
            a = np.hstack([a, np.ones((len(a), 1), np.float32)])
        y = np.asarray(y, dtype=np.float32)
        self.ata += a.T @ a
        self.aty += a.T @ y
        self.yty += (y.astype(np.float64) ** 2).sum(axis=0)
        self.rows += len(a)

    def merged(self, other: "LeastSquares") -> "LeastSquares":
        """The system over both sets of rows."""
        both = LeastSquares(len(self.ata) - (1 if self.bias else 0), self.aty.shape[1], bias=self.bias)
        both.ata, both.aty, both.yty = self.ata + other.ata, self.aty + other.aty, self.yty + other.yty
        both.rows = self.rows + other.rows
        return both

    def solve(self, ridge: float = 1e-4,
              prior: tuple[np.ndarray, np.ndarray | None] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Weights [features, outputs] and bias [outputs] (None without bias).

        The ridge term (relative to the mean diagonal of A^T A) pulls the weights and bias towards
        `prior` (the current ones, when given) rather than towards zero, so few rows cannot wreck a layer.
        """
        damp = ridge * self._scale()
        rhs = self.aty + damp * self._prior(prior)
        system = self.ata + damp * np.eye(len(self.ata))
        try:
            solution = np.linalg.solve(system, rhs)
        except np.linalg.LinAlgError:  # singular even with the ridge (e.g. all-zero inputs): least-norm answer
            solution = np.linalg.lstsq(system, rhs, rcond=None)[0]
        return self._split(solution)

    def _scale(self) -> float:
        return max(float(np.trace(self.ata)) / len(self.ata), 1e-12)

    def _prior(self, prior) -> np.ndarray:
        return np.zeros_like(self.aty) if prior is None else self._stack(*prior)

    def _split(self, solution: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        return (solution[:-1], solution[-1]) if self.bias else (solution, None)

    def _stack(self, weights: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
        if not self.bias:
            return np.asarray(weights, dtype=np.float64)
        bias = np.zeros(weights.shape[1]) if bias is None else bias
        return np.vstack([weights, np.asarray(bias, dtype=np.float64)[None, :]])

    def relative_error(self, weights: np.ndarray, bias: np.ndarray | None) -> float:
        """||A W + b - Y||^2 / ||Y||^2 over everything added, from the accumulated sums."""
        x = self._stack(weights, bias)
        residual = self.yty.sum() - 2 * np.sum(x * self.aty) + np.sum(x * (self.ata @ x))
        return float(max(residual, 0.0) / max(self.yty.sum(), 1e-30))


RIDGES = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)


def validated_fit(train: LeastSquares, held_out: LeastSquares, prior: tuple[np.ndarray, np.ndarray | None],
                  ridges=RIDGES) -> tuple[np.ndarray, np.ndarray | None, float | None, float]:
    """Fit on `train` at each ridge, keep the one with the least error on `held_out`, refit on both.

    Returns (weights, bias, ridge, held-out error of the chosen train-only fit); ridge None means no
    fit beat `prior` on the held-out rows, and `prior` comes back unchanged. With few rows per
    feature (a small calibration set) this picks a strong pull towards the prior instead of overfitting.
    With no held-out rows, it fits `train` at a fixed ridge of 1e-3 and reports the training error.
    """
    if held_out.rows == 0:  # nothing to validate on (a single calibration feed): a mild fixed ridge
        weights, bias = train.solve(1e-3, prior)
        return weights, bias, 1e-3, train.relative_error(weights, bias)
    best_error, best_ridge = held_out.relative_error(*prior), None
    for ridge in sorted(ridges, reverse=True):  # strong to weak; the held-out error is about unimodal in the ridge
        error = held_out.relative_error(*train.solve(ridge, prior))
        if error < best_error:
            best_error, best_ridge = error, ridge
        elif best_ridge is not None:
            break
    if best_ridge is None:
        return prior[0], prior[1], None, best_error
    weights, bias = train.merged(held_out).solve(best_ridge, prior)
    return weights, bias, best_ridge, best_error
