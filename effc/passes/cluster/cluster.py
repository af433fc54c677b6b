"""Weight sharing (Deep Compression): k-means each weight into a small codebook stored with narrow indices."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import onnx_graphsurgeon as gs

from effc.analysis.weights import WEIGHT_SCALE_KEY, int8_weight_qmax, output_axis
from effc.calib import CalibrationData
from effc.errors import EffcError
from effc.ir import Model
from effc.ir.folding import fold_batchnorm, fold_weight_subgraphs
from effc.passes.cluster.kmeans import Init, Solver, kmeans_1d
from effc.passes.cluster.refine import ClusteredWeight, refine, set_bias
from effc.passes.cluster.storage import (channel_codebooks, decode_weights, index_bits, index_dtype, index_opset, raise_opset,
                                         write_decoder)
from effc.pipeline.pass_base import Pass, PassResult, register_pass

__all__ = ["Cluster", "decode_weights"]

CLUSTERED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
RANDOM_CALIBRATION_SAMPLES = 8


@register_pass
class Cluster(Pass):
    """Share weights through a k-entry codebook per tensor or output channel; the file stores 2/4/8-bit indices.

    Weights of Conv/ConvTranspose/Gemm/MatMul with at least min_size values are clustered by 1-D k-means
    (kmeans.py) and stored as a codebook (float32 shared, float16 per channel) plus UINT2 (k <= 4; the model is
    converted to opset 25), UINT4 (k <= 16; opset 21) or UINT8 indices, decoded in the graph by
    Cast -> [Add] -> Gather [-> Cast], which ONNX Runtime folds at session start. scope=auto gives a weight one
    codebook per output channel when a shared one leaves the weight (max_error) or any live channel
    (max_channel_error) too far off. Weights computed from constants (a transposed MatMul weight) are folded
    first, and so is BatchNorm after a Conv (fold_bn=true: four floats per channel become one bias).
    reconstruct=true refits each codebook and the layer's bias on calibration data to minimise the layer's output
    error (refused without calibration unless random calibration was allowed); assign=gptq also picks the entries
    by GPTQ's recursion on those rows (refine.py). assign=auto (the default) is gptq, or nearest when int8 follows:
    alone, nearest entries cost the trained detector 0.9 recall points on its 96 evaluation pages and 2.5 on 96
    others, GPTQ's 0.0 and 0.9 (the other trained models: within 0.4 point either way); before int8, whose grid
    the codebooks are then snapped to, GPTQ's entries cost the direction classifier a point (6 of 600 lines)
    that nearest ones do not, and the detector the same either way (benchmarks/README.md, bench_trained).
    Orders: prune then cluster, and cluster then int8 (codebooks are snapped to the int8 grid and the scales
    recorded in metadata `effc.int8_weight_scale.<weight>`, so int8 adds no weight error); cluster after int8
    and prune after cluster are refused. A second cluster pass takes only the weights the first left float:
    `cluster(k=4),cluster(k=16,min_size=128)` gives the large weights 2-bit indices and the smaller ones 4-bit
    (its refit reproduces the model as the first pass left it); the same pass twice changes nothing the second
    time.
    """

    name = "cluster"
    kind = "lossy"

    @dataclass
    class Options:
        k: int = field(default=16, metadata={"help": "codebook entries (2..256); <= 4 stores 2-bit indices, <= 16 4-bit"})
        scope: Literal["auto", "tensor", "channel"] = field(default="auto", metadata={
            "help": "one codebook per weight or per output channel; auto: per weight unless a channel exceeds max_channel_error"})
        max_channel_error: float = field(default=0.3, metadata={
            "help": "scope=auto: largest relative L2 error of an output channel a shared codebook may leave"})
        max_error: float = field(default=0.05, metadata={
            "help": "scope=auto: largest relative L2 error of the whole weight a shared codebook may leave"})
        init: Init = field(default="kmeans++", metadata={"help": "k-means starting centres"})
        min_size: int = field(default=1024, metadata={"help": "weights with fewer values stay float"})
        exclude: tuple[str, ...] = field(default=(), metadata={"help": "node names or op types left alone"})
        reconstruct: bool = field(default=True, metadata={"help": "refit codebooks and biases on calibration data"})
        assign: Literal["auto", "nearest", "gptq"] = field(default="auto", metadata={
            "help": "reconstruct: each weight's nearest codebook entry, or entries picked by GPTQ's least-squares "
                    "recursion; auto: gptq, nearest when int8 follows"})
        samples: int = field(default=16, metadata={"help": "calibration samples used by reconstruct"})
        rows: int = field(default=1024, metadata={"help": "input rows per layer used by reconstruct"})
        fold_bn: bool = field(default=True, metadata={"help": "fold BatchNorm into the Conv first (smaller file)"})
        solver: Solver = field(default="numpy", metadata={"help": "k-means implementation (sklearn is optional)"})

        def validate(self):
            if not 2 <= self.k <= 256:
                raise ValueError("k must be in [2, 256] (indices are at most 8-bit)")
            if self.min_size < 1 or self.samples < 1 or self.rows < 1:
                raise ValueError("min_size, samples and rows must be at least 1")
            if not 0 < self.max_channel_error:
                raise ValueError("max_channel_error must be positive")

    def check_context(self, ctx) -> None:
        if self.options.reconstruct and ctx.calibration is None and not ctx.allow_random_calibration:
            raise EffcError("pass cluster with reconstruct=true needs calibration data: give --calib DATA.npz, or reconstruct=false")

    def check_model(self, model: Model) -> None:
        model.check_node_refs(self.options.exclude, "option exclude")

    def run(self, model: Model, ctx) -> PassResult:
        opts = self.options
        model.check_node_refs(opts.exclude, "option exclude")  # again: earlier passes may have renamed nodes
        _check_order(ctx)
        # A later cluster pass sees the earlier one's decoders as weights computed from constants: folding them would
        # cluster decoded weights again, so it only takes the weights still stored as float (smaller ones, with its k).
        again = any(spec.split("(")[0] == "cluster" for spec in ctx.history)
        folded = 0 if again else fold_weight_subgraphs(model)  # weights computed from constants (Transpose of a MatMul weight)
        if not eligible_layers(model, opts.min_size, opts.exclude):
            return PassResult(bool(folded), {"clustered_layers": 0, "folded": folded})
        bytes_before = model.serialized_size()
        snap = "int8" in ctx.upcoming
        assign = opts.assign if opts.assign != "auto" else ("nearest" if snap else "gptq")
        if opts.fold_bn or snap:  # int8 would fold BatchNorm into the decoded weight later, off the grid we snap to
            folded += fold_batchnorm(model)
        raised = index_opset(opts.k) is not None and raise_opset(model, index_opset(opts.k))
        layers = eligible_layers(model, opts.min_size, opts.exclude)  # again: raising the opset rebuilt the graph
        reference = model.copy()
        clustered = []
        with ctx.progress("cluster: k-means", total=len(layers)) as bar:
            for node in layers:
                layer = _cluster(node, opts, ctx.seed)
                if layer is not None:
                    clustered.append(layer)
                bar.advance()
        refined = 0
        if opts.reconstruct:
            with ctx.progress("cluster: refitting codebooks", total=None):
                refined = refine(reference, clustered, _feeds(model, ctx, opts.samples), opts.rows, ctx.seed, assign)
        report = []
        for layer in clustered:
            scales = _snap_to_int8(layer, int8_weight_qmax(ctx.isa())) if snap else None
            decoded = _store(model, layer, index_dtype(opts.k, model.opset), scales)
            if scales is not None:
                model.metadata[WEIGHT_SCALE_KEY + decoded.name] = json.dumps([float(s) for s in scales])
            report.append(_layer_report(layer, decoded.name))
        model.cleanup()
        bytes_after = model.serialized_size()
        stats = {"clustered_layers": len(clustered), "per_channel_layers": sum(c.per_channel for c in clustered),
                 "float_layers": len(layers) - len(clustered), "refined_layers": refined, "file_bytes_before": bytes_before,
                 "file_bytes_after": bytes_after, "file_ratio": round(bytes_after / bytes_before, 4)}
        if raised:
            stats["opset"] = model.opset
        return PassResult(True, stats, {"layers": report, "snapped_to_int8": snap,
                                        "assign": assign if opts.reconstruct else None})


def eligible_layers(model: Model, min_size: int, exclude: tuple[str, ...] = ()) -> list[gs.Node]:
    """Layers whose weight (input 1) is a float32 constant of at least min_size values, used by that layer only."""
    layers = []
    for node in model.graph.nodes:
        if node.op not in CLUSTERED_OPS or node.name in exclude or node.op in exclude or len(node.inputs) < 2:
            continue
        weight = node.inputs[1]
        if isinstance(weight, gs.Constant) and weight.values.dtype == np.float32 and weight.values.size >= min_size \
                and len(weight.outputs) == 1:
            layers.append(node)
    return layers


def _check_order(ctx) -> None:
    if any(spec.split("(")[0] == "int8" for spec in ctx.history):
        raise EffcError("cluster after int8 is refused: the weights are already int8 QDQ; run cluster before int8")
    if "prune" in ctx.upcoming:
        raise EffcError("prune after cluster is refused: pruning would break the codebooks; run prune before cluster")


def _cluster(node: gs.Node, opts, seed: int) -> ClusteredWeight | None:
    """The layer's clustered weight in the scope asked for; with scope=auto, a shared codebook unless it leaves some
    output channel with more than max_channel_error relative error, else per channel, else (when per-channel
    codebooks would outweigh the float weight) None: the layer stays float."""
    weight = np.asarray(node.inputs[1].values, np.float32)
    axis = output_axis(node) if weight.ndim > 1 else 0
    if opts.scope == "channel" and weight.ndim > 1:
        return _cluster_per_channel(node, weight, axis, opts, seed)
    codebook, indices = kmeans_1d(weight, opts.k, opts.init, seed=seed, solver=opts.solver)
    shared = ClusteredWeight(node, weight, _pad(codebook, opts.k), indices, axis)
    if opts.scope == "tensor" or weight.ndim < 2 or (worst_channel_error(shared) <= opts.max_channel_error
                                                      and relative_error(shared) <= opts.max_error):
        return shared
    channels = weight.shape[axis]
    if channels * (2 * opts.k + 4) + weight.size * index_bits(opts.k) / 8 >= weight.nbytes:  # fp16 codebooks, offsets
        return None
    return _cluster_per_channel(node, weight, axis, opts, seed)


def _cluster_per_channel(node: gs.Node, weight: np.ndarray, axis: int, opts, seed: int) -> ClusteredWeight:
    rows = np.moveaxis(weight, axis, 0)
    books, index_rows = zip(*(kmeans_1d(row, opts.k, opts.init, seed=seed, solver=opts.solver) for row in rows))
    codebook = np.stack([_pad(b, opts.k) for b in books])
    return ClusteredWeight(node, weight, codebook, np.moveaxis(np.stack(index_rows), 0, axis), axis)


def worst_channel_error(layer: ClusteredWeight, negligible: float = 0.01) -> float:
    """The largest relative L2 error ||w_o - decoded_o|| / ||w_o|| over output channels o, leaving out channels
    whose norm is below `negligible` times the median channel's (dead or nearly dead channels)."""
    rows = np.moveaxis(layer.weight, layer.axis, 0).reshape(layer.weight.shape[layer.axis], -1).astype(np.float64)
    decoded = np.moveaxis(layer.decoded(), layer.axis, 0).reshape(rows.shape)
    norms = np.linalg.norm(rows, axis=1)
    live = norms > negligible * np.median(norms)
    if not live.any():
        return 0.0
    return float((np.linalg.norm(rows - decoded, axis=1)[live] / norms[live]).max())


def relative_error(layer: ClusteredWeight) -> float:
    """||w - decoded|| / ||w|| over the whole weight."""
    weight = layer.weight.astype(np.float64)
    norm = np.linalg.norm(weight)
    return float(np.linalg.norm(weight - layer.decoded()) / norm) if norm > 0 else 0.0


def _pad(codebook: np.ndarray, k: int) -> np.ndarray:
    """Fewer distinct values than k: repeat the last entry so every codebook has k entries (indices never use them)."""
    return np.concatenate([codebook, np.repeat(codebook[-1:], k - len(codebook))])


def _feeds(model: Model, ctx, samples: int) -> list[dict]:
    specs = model.input_specs()
    calibration = ctx.calibration
    if calibration is None:
        ctx.warn("cluster: refitting codebooks on random inputs; they will not match real data")
        calibration = CalibrationData.random(specs, RANDOM_CALIBRATION_SAMPLES, seed=ctx.seed)
    return list(calibration.batches(specs, limit=samples))


def _snap_to_int8(layer: ClusteredWeight, qmax: int) -> np.ndarray:
    """Move codebook values onto the int8 grid (within [-qmax, qmax]) of their output channels; returns the
    per-channel scales."""
    books = layer.codebook if layer.per_channel else layer.codebook[None, :]
    peaks = np.abs(books).max(axis=1)
    scales = np.where(peaks > 0, peaks / float(qmax), 1.0).astype(np.float32)
    layer.codebook = (np.clip(np.round(books / scales[:, None]), -qmax, qmax).astype(np.float32)
                      * scales[:, None]).reshape(layer.codebook.shape)
    channels = layer.weight.shape[layer.axis] if layer.weight.ndim > 1 else 1
    return scales if layer.per_channel else np.repeat(scales, channels)


def _store(model: Model, layer: ClusteredWeight, dtype: np.dtype, int8_scales: np.ndarray | None) -> gs.Variable:
    """Write the layer's decoder; per-channel codebooks go to float16, or to int8 values and the int8 grid's scales
    when they were snapped to it (so the stored weight is exactly the snapped one); layer.codebook becomes what is
    stored."""
    node = layer.node
    codebook, scales = layer.codebook, None
    if layer.per_channel:
        codebook, scales = channel_codebooks(layer.codebook, int8_scales)
        layer.codebook = codebook.astype(np.float32) * (1.0 if scales is None else scales[:, None])
    decoded = write_decoder(model, node.inputs[1].name, codebook, layer.indices, layer.axis, dtype, scales)
    node.inputs[1] = decoded
    if layer.bias is not None:
        set_bias(model, node, layer.bias)
    return decoded


def _layer_report(layer: ClusteredWeight, decoded: str) -> dict:
    signal = float(np.sum(layer.weight.astype(np.float64) ** 2))
    noise = float(np.sum((layer.weight.astype(np.float64) - layer.decoded()) ** 2))
    sqnr = round(float(10 * np.log10(signal / noise)), 2) if noise > 0 else None  # None: exact
    return {"layer": layer.node.name, "weight": decoded, "params": int(layer.weight.size), "weight_sqnr_db": sqnr,
            "scope": "channel" if layer.per_channel else "tensor"}
