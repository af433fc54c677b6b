"""Least-squares refitting of a linear layer from calibration activations (He et al. 2017, ThiNet).

A Conv or Gemm computes y = W x + b over input patches. Given the patches its (changed) inputs
produce and the outputs it should produce, `LeastSquares` accumulates the normal equations over
batches (memory bounded by the feature count, not the data) and solves for W and b with a small
ridge term. `conv_patches` turns sampled output positions of a 2-D Conv into im2col rows;
`intermediate_session` runs a model on ONNX Runtime with chosen inner tensors as extra outputs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort

from effc.ir import Model
from effc.runtime import ort_session


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


def conv_patches(x: np.ndarray, kernel: Sequence[int], strides: Sequence[int], pads: Sequence[int],
                 dilations: Sequence[int], positions: np.ndarray) -> np.ndarray:
    """im2col rows of a 2-D Conv input `x` [N, C, H, W] at output `positions` [(n, oh, ow)], shape [P, C*kh*kw]."""
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    span = [d * (k - 1) + 1 for k, d in zip(kernel, dilations)]
    # a view [N, C, H', W', kh, kw] of every window: one gather at the positions copies just their patches
    windows = sliding_window_view(xp, span, axis=(2, 3))[..., ::dilations[0], ::dilations[1]]
    n, oh, ow = positions[:, 0], positions[:, 1], positions[:, 2]
    return windows[n, :, oh * strides[0], ow * strides[1]].reshape(len(positions), -1)


def sample_positions(shape: Sequence[int], count: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `count` distinct (n, h, w) positions of an output of `shape` [N, C, H, W], sampled uniformly."""
    n, _, h, w = shape
    total = n * h * w
    flat = rng.choice(total, size=min(count, total), replace=False)
    return np.stack(np.unravel_index(flat, (n, h, w)), axis=1)


def sample_input_rows(node: gs.Node, x: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `count` rows of a layer's input `x` as its weight sees them: im2col patches at sampled output positions
    of a 2-D Conv, else sampled rows of the (flattened) input of a Gemm/MatMul."""
    if node.op == "Conv":
        kernel, strides, pads, dilations = conv_geometry(node)
        out_h = (x.shape[2] + pads[0] + pads[2] - dilations[0] * (kernel[0] - 1) - 1) // strides[0] + 1
        out_w = (x.shape[3] + pads[1] + pads[3] - dilations[1] * (kernel[1] - 1) - 1) // strides[1] + 1
        positions = sample_positions((x.shape[0], 0, out_h, out_w), count, rng)
        return conv_patches(x, kernel, strides, pads, dilations, positions)
    flat = x.reshape(-1, x.shape[-1])
    return flat[rng.choice(len(flat), size=min(count, len(flat)), replace=False)]


def intermediate_session(model: Model, names: Sequence[str]) -> ort.InferenceSession:
    """An ORT session of `model` that also returns the inner tensors `names` (float tensors)."""
    proto = model.to_proto()
    present = {o.name for o in proto.graph.output}
    for name in names:
        if name not in present:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
            present.add(name)
    return ort_session(proto)


def conv_geometry(node: gs.Node) -> tuple[list[int], list[int], list[int], list[int]] | None:
    """(kernel, strides, pads, dilations) of a 2-D Conv with explicit padding, or None if not that."""
    weight = node.inputs[1]
    if len(weight.shape) != 4 or node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        return None
    kernel = list(weight.shape[2:])
    strides = list(node.attrs.get("strides", [1, 1]))
    pads = list(node.attrs.get("pads", [0, 0, 0, 0]))
    dilations = list(node.attrs.get("dilations", [1, 1]))
    return kernel, strides, pads, dilations
