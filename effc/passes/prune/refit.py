"""Layer-by-layer reconstruction after pruning: refit each layer that lost input channels.

In topological order, each such layer's inputs are taken from the pruned model (with the layers
before it already refit) and its targets from the unpruned model, both on ONNX Runtime; the layer's
weights and bias are then the least-squares fit (see `reconstruct.py`).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import onnx_graphsurgeon as gs

from effc.analysis.layer_inputs import conv_geometry, conv_patches, intermediate_session, sample_positions
from effc.analysis.least_squares import LeastSquares, rows_to_sample, validated_fit
from effc.ir import Model


def refittable(node: gs.Node) -> bool:
    if node.op == "Conv":
        return int(node.attrs.get("group", 1)) == 1 and conv_geometry(node) is not None
    if node.op == "Gemm":
        c = node.inputs[2] if len(node.inputs) > 2 else None
        return c is None or not c.name or c.values.ndim <= 1 or c.shape[0] == 1
    return node.op == "MatMul"


def refit_layers(original: Model, pruned: Model, layers: Sequence[str], kept_outputs: Mapping[str, np.ndarray],
                 feeds: Sequence[Mapping[str, np.ndarray]], ctx) -> list[dict]:
    """Refit `layers` (node names, present in both models) of `pruned` in place; returns per-layer errors.

    `kept_outputs[name]` lists the original output channels the pruned layer still computes.
    Every fourth calibration feed is held out to choose the ridge (see `validated_fit`); each report row
    has the layer's relative output error on those held-out feeds before and after its refit.
    """
    nodes = {n.name: n for n in pruned.graph.nodes}
    order = [n.name for n in pruned.graph.nodes if n.name in set(layers) and refittable(n)]
    targets = _reference_rows(original, [nodes[name] for name in order], kept_outputs, feeds, ctx)
    report = []
    with ctx.progress("reconstructing pruned layers", total=len(order)) as bar:
        for name in order:
            node = nodes[name]
            weights, bias, scale = linear_form(node)
            train, held_out = (LeastSquares(weights.shape[0], weights.shape[1], bias=node.op != "MatMul") for _ in range(2))
            session = intermediate_session(pruned, [node.inputs[0].name])
            for i, (feed, (positions, target)) in enumerate(zip(feeds, targets[name])):
                x = session.run([node.inputs[0].name], dict(feed))[0]
                (held_out if _held_out(i, len(feeds)) else train).add(_inputs_at(node, x, positions), target)
            new_weights, new_bias, ridge, error = validated_fit(train, held_out, (weights, bias))
            if ridge is not None:
                _write_back(pruned, node, new_weights, new_bias, scale)
            report.append({"layer": name, "rows": train.rows + held_out.rows, "ridge": ridge,
                           "held_out_error_before": held_out.relative_error(weights, bias),
                           "held_out_error_after": error})
            bar.advance()
    return report


def _held_out(index: int, count: int) -> bool:
    """Every fourth feed validates the ridge (whole feeds, so rows from one image stay on one side)."""
    return count >= 2 and index % 4 == 3 or (count in (2, 3) and index == count - 1)


def _reference_rows(original: Model, layers: Sequence[gs.Node], kept_outputs, feeds, ctx) -> dict[str, list]:
    """Per layer and feed: the sampled output positions and the unpruned model's outputs there (kept channels)."""
    rng = ctx.rng("prune-reconstruct")
    outputs = {node.name: node.outputs[0].name for node in layers}
    session = intermediate_session(original, list(outputs.values()))
    names = list(outputs.values())
    rows = {}
    for node in layers:
        features = linear_form(node)[0].shape[0]
        rows[node.name] = max(1, rows_to_sample(features) // max(1, len(feeds)))
    targets: dict[str, list] = {node.name: [] for node in layers}
    for feed in feeds:
        values = dict(zip(names, session.run(names, dict(feed))))
        for node in layers:
            y = values[outputs[node.name]]
            if node.op == "Conv":
                positions = sample_positions(y.shape, rows[node.name], rng)
                picked = y[positions[:, 0], :, positions[:, 1], positions[:, 2]]
            else:  # a MatMul of a [batch, tokens, features] activation: rows are batch x tokens
                flat = y.reshape(-1, y.shape[-1])
                positions = rng.choice(len(flat), size=min(rows[node.name], len(flat)), replace=False)
                picked = flat[positions]
            targets[node.name].append((positions, picked[:, kept_outputs[node.name]]))
    return targets


def _inputs_at(node: gs.Node, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The layer's input rows (im2col patches for a Conv) at the sampled output positions."""
    if node.op == "Conv":
        kernel, strides, pads, dilations = conv_geometry(node)
        return conv_patches(x, kernel, strides, pads, dilations, positions)
    return x.reshape(-1, x.shape[-1])[positions]


def linear_form(node: gs.Node) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float]]:
    """The layer as y = x W + b: W [features, outputs], b [outputs] or None, and Gemm's (alpha, beta)."""
    w = np.asarray(node.inputs[1].values, dtype=np.float64)
    bias_input = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    if node.op == "Conv":
        bias = None if bias_input is None else np.asarray(bias_input.values, dtype=np.float64)
        return w.reshape(w.shape[0], -1).T, bias, (1.0, 1.0)
    if node.op == "MatMul":
        return w, None, (1.0, 1.0)
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    mat = w.T if node.attrs.get("transB", 0) else w
    bias = None
    if bias_input is not None:
        bias = beta * np.broadcast_to(np.asarray(bias_input.values, dtype=np.float64).reshape(-1), (mat.shape[1],))
    return alpha * mat, bias, (alpha, beta)


def _write_back(model: Model, node: gs.Node, weights: np.ndarray, bias: np.ndarray | None, scale: tuple[float, float]) -> None:
    old = node.inputs[1]
    dtype = old.values.dtype
    if node.op == "Conv":
        new_w = weights.T.reshape(old.shape)
    elif node.op == "Gemm":
        new_w = weights / scale[0]
        new_w = new_w.T if node.attrs.get("transB", 0) else new_w
    else:
        new_w = weights
    node.inputs[1] = gs.Constant(model.unique_name(f"{old.name}_refit"), np.ascontiguousarray(new_w, dtype=dtype))
    if bias is None:
        return
    values = np.ascontiguousarray(bias / (scale[1] if node.op == "Gemm" else 1.0), dtype=dtype)
    constant = gs.Constant(model.unique_name(f"{node.name}_bias_refit"), values)
    if len(node.inputs) > 2:
        node.inputs[2] = constant
    else:
        node.inputs.append(constant)
