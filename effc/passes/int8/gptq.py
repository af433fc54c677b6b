"""Least-squares rounding of int8 weights from calibration inputs (GPTQ: Frantar et al. 2022, after OBQ).

A layer computes y = W x over input rows x (im2col patches for a Conv). With the per-channel scales fixed,
rounding each weight to its nearest grid point ignores how the inputs correlate; GPTQ instead minimises
||W X - Q X||^2 given H = E[x x^T]: it rounds one input dimension at a time and lets the dimensions not yet
rounded compensate its rounding error (the least-squares update, from a Cholesky factor of H). All output rows
share H, so the loop runs over input dimensions only, vectorized over rows (and over groups of a grouped
Conv, one H per group).

`InputMoments` accumulates H for one layer while calibration streams (sampled rows, memory bounded by the
feature count); `layer_form` reshapes a weight into [groups, rows, features] matching those rows;
`gptq_round` returns the integers, by the nearest-plane recursion of effc/analysis/nearest_plane.py.
"""

from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs
from threadpoolctl import threadpool_limits

from effc.analysis.layer_inputs import conv_geometry, sample_input_rows
from effc.analysis.least_squares import rows_to_sample
from effc.analysis.nearest_plane import DAMPING, damping, nearest_plane

FEW_BLOCKS = 8
MAX_CHUNK = 1152  # features per factorized block; wider layers (ResNet-18's 4608) split into equal chunks


def gptq_supported(node: gs.Node) -> str | None:
    """None when GPTQ can round `node`'s weight (2-D Conv with explicit pads, Gemm, MatMul), else why not."""
    if node.op == "Conv":
        return None if conv_geometry(node) is not None else "not a 2-D Conv with explicit padding"
    if node.op in ("Gemm", "MatMul") and np.asarray(node.inputs[1].values).ndim == 2:
        return None
    return f"{node.op} weights are rounded to nearest"


def _gram(rows: np.ndarray) -> np.ndarray:
    return rows.T @ rows  # the same buffer on both sides: numpy calls syrk


def feature_chunks(features: int) -> int:
    """Into how many equal chunks of at most MAX_CHUNK a group's features split (1: whole).

    GPTQ then treats H as block diagonal: a chunk's rounding error is compensated within the chunk only.
    The Cholesky cost falls with the square of the chunk count; on ResNet-18's held-out images the weight
    output-error reduction went from 4.6 dB (whole) to 4.1 dB (chunks of 1152). A width without an even
    split into chunks of at least MAX_CHUNK / 8 stays whole.
    """
    for count in range(1, features + 1):
        if features % count == 0 and features // count <= MAX_CHUNK:
            return count if features // count >= MAX_CHUNK // 8 else 1
    return 1


class InputMoments:
    """The running second moment E[x x^T] of one layer's input rows: one matrix per block (a group of a
    grouped Conv, or a chunk of its features, see `feature_chunks`), [blocks, d, d].

    Input rows (im2col patches at output positions of a Conv, rows of a MatMul input) are drawn evenly from
    the `samples` calibration samples, `rows_to_sample(features)` in all whatever the set's size. Rows wait in
    a buffer of about d rows before they join the sum: one large product instead of a d x d update per batch.
    """

    def __init__(self, node: gs.Node, samples: int, rng: np.random.Generator):
        self.node, self.rng = node, rng
        self.groups = int(node.attrs.get("group", 1)) if node.op == "Conv" else 1
        features = layer_form(node, np.asarray(node.inputs[1].values)).shape[2]
        self.chunks = feature_chunks(features)
        width = features // self.chunks  # of one block: what H's rank and conditioning depend on
        self.rows_per_sample = max(1, math.ceil(rows_to_sample(width) / max(samples, 1)))
        self.flush_rows = max(width, 256)
        self.sum: np.ndarray | None = None
        self.rows = 0
        self._buffer: list[np.ndarray] = []
        self._buffered = 0

    def update(self, x: np.ndarray) -> None:
        """Add the rows of one batch of the layer's float input `x`."""
        rows = sample_input_rows(self.node, np.asarray(x, np.float32), self.rows_per_sample * x.shape[0], self.rng)
        self._buffer.append(rows)
        self._buffered += len(rows)
        if self._buffered >= self.flush_rows:
            self._flush()

    def hessian(self) -> np.ndarray | None:
        """E[x x^T] per block, [blocks, d, d] (float64), or None before any row arrived."""
        self._flush()
        return None if self.sum is None else self.sum / max(self.rows, 1)

    def _flush(self) -> None:
        if not self._buffer:
            return
        rows = np.concatenate(self._buffer)
        self._buffer, self._buffered = [], 0
        per_group = rows.reshape(len(rows), self.groups * self.chunks, -1).transpose(1, 0, 2)  # [blocks, P, d]
        if len(per_group) <= FEW_BLOCKS:  # a 2-D a.T @ a is a symmetric rank-k update in BLAS: half the work
            product = np.stack([_gram(np.ascontiguousarray(block)) for block in per_group])
        else:  # many small groups (depthwise): one batched product
            product = np.matmul(per_group.transpose(0, 2, 1), per_group)  # float32 products, float64 sums
        self.sum = product.astype(np.float64) if self.sum is None else self.sum + product
        self.rows += len(rows)


def layer_form(node: gs.Node, weight: np.ndarray, chunks: int = 1) -> np.ndarray:
    """`weight` as [blocks, output rows per group, features per block], features in im2col order (C_in/g, kh,
    kw); block g * chunks + i holds group g's i-th chunk of features."""
    if node.op == "Conv":
        groups = int(node.attrs.get("group", 1))
        grouped = weight.reshape(groups, weight.shape[0] // groups, -1)
    else:
        grouped = (weight if node.op == "Gemm" and node.attrs.get("transB", 0) else weight.T)[None]  # [1, outputs, features]
    groups, rows, features = grouped.shape
    return grouped.reshape(groups, rows, chunks, -1).transpose(0, 2, 1, 3).reshape(groups * chunks, rows, -1)


def weight_form(node: gs.Node, layer: np.ndarray, shape: tuple[int, ...], chunks: int = 1) -> np.ndarray:
    """The inverse of `layer_form`: a [blocks, rows, features] array back in the weight's own layout."""
    blocks, rows, width = layer.shape
    grouped = layer.reshape(blocks // chunks, chunks, rows, width).transpose(0, 2, 1, 3).reshape(blocks // chunks, rows, -1)
    if node.op == "Conv":
        return grouped.reshape(shape)
    return grouped[0] if node.op == "Gemm" and node.attrs.get("transB", 0) else grouped[0].T


def gptq_round(weight: np.ndarray, scales: np.ndarray, hessian: np.ndarray, damping_fraction: float = DAMPING,
               qmax: int = 127) -> np.ndarray:
    """Integers [G, R, d] in [-qmax, qmax] for `weight` [G, R, d] on grids `scales` [G, R], minimising the
    output error e^T H e (e: a row's weight error) on inputs of second moment `hessian` [G, d, d], H damped
    by `damping_fraction` of its mean diagonal (see `nearest_plane`)."""
    # in grid units (weights / scale) the recursion is the same, and the rounding needs no division
    def snap(column: np.ndarray, _: int) -> np.ndarray:
        return np.clip(np.rint(column, out=column), -qmax, qmax, out=column)

    return nearest_plane(weight / scales[:, :, None], hessian, damping_fraction, snap)


def output_error(error: np.ndarray, hessian: np.ndarray) -> float:
    """E||E x||^2 summed over output rows, for a weight error [G, R, d] and inputs of moment [G, d, d]."""
    error = error.astype(np.float32)
    return float(np.sum(np.matmul(error, hessian.astype(np.float32)) * error, dtype=np.float64))


class GptqRounding:
    """GPTQ integers for the layers whose input moments were collected, each computed once: the accuracy
    budget's bisection rewrites the model many times with the same weights and scales."""

    def __init__(self, moments: dict[str, InputMoments]):
        self.moments = {name: m for name, m in moments.items() if m.hessian() is not None}
        self._rounded: dict[str, tuple[np.ndarray, float]] = {}

    def covers(self, node: gs.Node) -> bool:
        return node.name in self.moments

    def quantize(self, node: gs.Node, weight: np.ndarray, scales: np.ndarray, qmax: int = 127) -> tuple[np.ndarray, float]:
        """(int8 weight in its own layout within [-qmax, qmax], output-error reduction over nearest rounding in dB)."""
        if node.name not in self._rounded:
            # thousands of small sequential BLAS calls: on two busy cores OpenBLAS's threads mostly wait at each
            # call's barrier (ResNet-18's 4608-wide layer: 3.8 s of CPU with 2 threads, 0.46 s with one)
            with threadpool_limits(1, user_api="blas"):
                self._rounded[node.name] = gptq_quantize(node, weight, scales, self.moments[node.name], qmax)
        return self._rounded[node.name]


def gptq_quantize(node: gs.Node, weight: np.ndarray, scales: np.ndarray, moments: InputMoments,
                  qmax: int = 127) -> tuple[np.ndarray, float]:
    """`weight` (its own layout) as int8 on the per-output-channel `scales`, rounded by GPTQ for the layer's
    input `moments`; and the layer's output-error reduction over nearest rounding on those rows, in dB
    (through the block-diagonal H that GPTQ used)."""
    hessian, chunks = moments.hessian(), moments.chunks
    layer = layer_form(node, weight, chunks).astype(np.float64)
    steps = np.repeat(scales.reshape(layer.shape[0] // chunks, -1), chunks, axis=0).astype(np.float64)
    rounded = gptq_round(layer, steps, hessian, damping(layer.shape[2], moments.rows), qmax=qmax)
    nearest = np.clip(np.round(layer / steps[:, :, None]), -qmax, qmax)
    gptq_error = output_error(rounded * steps[:, :, None] - layer, hessian)
    nearest_error = output_error(nearest * steps[:, :, None] - layer, hessian)
    gain = float("inf") if gptq_error <= 0 else 10.0 * math.log10(max(nearest_error, 1e-300) / gptq_error)
    return weight_form(node, rounded, weight.shape, chunks).astype(np.int8), gain
