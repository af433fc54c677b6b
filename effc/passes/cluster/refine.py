"""Data-aware codebook refinement: with the cluster assignment fixed, refit codebook values and bias by least squares.

A layer computes y[r, o] = sum_f X[r, f] W[f, o] + b[o]. With W[f, o] = c[idx[f, o]] (one codebook c) or
c_o[idx[f, o]] (one per output channel), y[r, o] = Z_o[r, :] c + b[o] where Z_o[r, j] sums the inputs X[r, f]
whose weight in column o uses entry j. The float layer's outputs on calibration inputs are the target; the bias
absorbs the mean (centred least squares), so refitting costs one segment sum over X per output channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from effc.analysis.layer_inputs import conv_geometry, intermediate_session, sample_input_rows
from effc.ir import Model

FIT_OUTPUTS = 64  # output channels sampled to fit a shared codebook
RIDGE = 1e-3  # relative to the mean diagonal; pulls the codebook towards the k-means one when data is scarce


@dataclass
class ClusteredWeight:
    """One clustered weight: codebook [k] (scope tensor) or [channels, k] (scope channel), indices of the weight's shape."""

    node: gs.Node
    weight: np.ndarray
    codebook: np.ndarray
    indices: np.ndarray
    axis: int  # the weight axis of output channels
    bias: np.ndarray | None = None  # a refitted bias (output channels), to be written into the layer

    @property
    def per_channel(self) -> bool:
        return self.codebook.ndim == 2

    def decoded(self) -> np.ndarray:
        """The float weight the codebook and indices stand for."""
        if not self.per_channel:
            return self.codebook[self.indices].astype(np.float32)
        rows = np.moveaxis(self.indices, self.axis, 0)
        picked = np.take_along_axis(self.codebook, rows.reshape(len(rows), -1), axis=1).reshape(rows.shape)
        return np.moveaxis(picked, 0, self.axis).astype(np.float32)


def refinable(node: gs.Node) -> bool:
    """Layers whose output is a plain matrix product of input rows: 2-D Conv with group 1, Gemm (alpha 1), 2-D MatMul."""
    if node.op == "Conv":
        return int(node.attrs.get("group", 1)) == 1 and len(node.inputs[1].shape) == 4 and conv_geometry(node) is not None
    if node.op == "Gemm":
        return float(node.attrs.get("alpha", 1.0)) == 1.0 and not node.attrs.get("transA", 0) and _gemm_bias_ok(node)
    return node.op == "MatMul" and len(node.inputs[1].shape) == 2


def refine(model: Model, layers: list[ClusteredWeight], feeds: list[dict], rows: int, seed: int) -> int:
    """Refit the codebooks (and biases) of `layers` on calibration `feeds`; returns how many were refitted.

    Layers are refitted in graph order: each sees the inputs the model with the layers before it already
    clustered produces, and is fitted to reproduce the float `model`'s output, so errors do not pile up
    A layer that gets one row per sample (a Gemm after pooling) needs many samples: with 16 it can overfit.
    """
    layers = [layer for layer in layers if refinable(layer.node)]
    if not layers or not feeds:
        return 0
    nodes = [layer.node for layer in layers]
    targets = _input_rows(model, nodes, feeds, rows, seed)
    work = model.copy()
    for position, layer in enumerate(layers):
        x = targets[layer.node.name] if position == 0 else _input_rows(work, [layer.node], feeds, rows, seed, start=position)[layer.node.name]
        w = _as_matrix(layer.node, layer.weight)
        has_bias = layer.node.op != "MatMul"
        old_bias = _bias(layer.node, w.shape[1])
        new_codebook, shift = _fit(x, targets[layer.node.name], w, _as_matrix(layer.node, layer.indices), layer.codebook, has_bias,
                                   np.random.default_rng([seed, position]))
        layer.codebook = new_codebook.astype(np.float32)
        if has_bias:
            layer.bias = (old_bias + shift).astype(np.float32)
        _apply(work, layer)
    return len(layers)


def _apply(work: Model, layer: ClusteredWeight) -> None:
    """Put the layer's clustered weight (decoded, float) and bias into the working copy."""
    node = next(n for n in work.graph.nodes if n.name == layer.node.name)
    node.inputs[1] = gs.Constant(work.unique_name(f"{node.name}/clustered"), layer.decoded())
    if layer.bias is not None:
        set_bias(work, node, layer.bias)


def set_bias(model: Model, node: gs.Node, bias: np.ndarray) -> None:
    """Give a Conv or Gemm a new constant bias [outputs] (Gemm's beta becomes 1)."""
    if node.op == "Gemm":
        node.attrs["beta"] = 1.0
    while len(node.inputs) < 3:
        node.inputs.append(gs.Variable.empty())
    node.inputs[2] = gs.Constant(model.unique_name(f"{node.name}/cluster/bias"), bias.astype(np.float32))


def _fit(x: np.ndarray, x_float: np.ndarray, w: np.ndarray, idx: np.ndarray, codebook: np.ndarray, centred: bool,
         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(codebook, bias shift [O]) so that the layer on rows x best reproduces the float layer on rows x_float."""
    k = codebook.shape[-1]
    outputs = w.shape[1]
    shared = codebook.ndim == 1
    # a shared codebook has only k unknowns: a sample of output channels pins them down as well as all of them
    fitted_outputs = np.sort(rng.choice(outputs, FIT_OUTPUTS, replace=False)) if shared and outputs > FIT_OUTPUTS else np.arange(outputs)
    hessians, gradients = [], []
    for o in fitted_outputs:
        z = _entry_sums(x, idx[:, o], k)
        y = x_float @ w[:, o]
        if centred:
            z, y = z - z.mean(axis=0), y - y.mean()
        hessians.append(z.T @ z)
        gradients.append(z.T @ y)
    if shared:
        new = _ridge_solve(np.sum(hessians, axis=0), np.sum(gradients, axis=0), codebook)
        per_output = np.broadcast_to(new, (outputs, k))
    else:
        new = np.stack([_ridge_solve(h, g, c) for h, g, c in zip(hessians, gradients, codebook)])
        per_output = new
    if not centred:
        return new, np.zeros(outputs)
    # b' = mean(y) - mean(Z) c, with mean(y) = b + mean(x) w and mean(Z_o)[j] = sum of mean(x) over entry j's inputs
    flat = (np.arange(outputs)[None, :] * k + idx).ravel()
    z_means = np.bincount(flat, weights=np.repeat(x.mean(axis=0), outputs), minlength=outputs * k).reshape(outputs, k)
    return new, x_float.mean(axis=0) @ w - np.einsum("ok,ok->o", z_means, per_output)


def _entry_sums(x: np.ndarray, column: np.ndarray, k: int) -> np.ndarray:
    """[R, k]: for each row of x, the sum of the inputs whose weight uses codebook entry j."""
    if k <= 64:  # one-hot product: BLAS does R*F*k work fastest for small k
        return x @ (column[:, None] == np.arange(k)[None, :]).astype(x.dtype)
    order = np.argsort(column, kind="stable")
    bounds = np.searchsorted(column[order], np.arange(k + 1))
    sums = np.concatenate([np.zeros((len(x), 1), x.dtype), np.cumsum(x[:, order], axis=1)], axis=1)
    return sums[:, bounds[1:]] - sums[:, bounds[:-1]]


def _ridge_solve(h: np.ndarray, g: np.ndarray, prior: np.ndarray) -> np.ndarray:
    damp = RIDGE * max(float(np.trace(h)) / len(h), 1e-12)
    return np.linalg.solve(h + damp * np.eye(len(h)), g + damp * prior)


def _input_rows(model: Model, nodes: list[gs.Node], feeds: list[dict], rows: int, seed: int, start: int = 0) -> dict[str, np.ndarray]:
    """Sampled input rows (im2col patches for a Conv) of layers, one model run per feed.

    Positions depend only on (seed, layer position, feed), so two models of the same shapes give paired rows.
    """
    names = sorted({node.inputs[0].name for node in nodes})
    session = intermediate_session(model, names)
    per_feed = max(1, rows // len(feeds))
    collected: dict[str, list] = {node.name: [] for node in nodes}
    for f, feed in enumerate(feeds):
        values = dict(zip(names, session.run(names, feed)))
        for position, node in enumerate(nodes, start):
            rng = np.random.default_rng([seed, position, f])
            collected[node.name].append(sample_input_rows(node, values[node.inputs[0].name], per_feed, rng))
    return {name: np.concatenate(parts).astype(np.float64) for name, parts in collected.items()}


def _as_matrix(node: gs.Node, array: np.ndarray) -> np.ndarray:
    """A weight-shaped array as [features, outputs]."""
    if node.op == "Conv":
        return array.reshape(array.shape[0], -1).T
    if node.op == "Gemm" and node.attrs.get("transB", 0):
        return array.T
    return array


def _bias(node: gs.Node, outputs: int) -> np.ndarray:
    if len(node.inputs) > 2 and node.inputs[2].name:
        beta = float(node.attrs.get("beta", 1.0)) if node.op == "Gemm" else 1.0
        return beta * np.broadcast_to(np.asarray(node.inputs[2].values, np.float64).reshape(-1), (outputs,))
    return np.zeros(outputs)


def _gemm_bias_ok(node: gs.Node) -> bool:
    if len(node.inputs) < 3 or not node.inputs[2].name:
        return True
    c = node.inputs[2]
    return isinstance(c, gs.Constant) and c.values.size in (1, max(c.values.shape or (1,)))
