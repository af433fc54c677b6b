"""Structured pruning: remove whole channels consistently across the graph, then refit from calibration data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import onnx_graphsurgeon as gs

from effc.analysis.channel_groups import BINARY_OPS, ChannelGroup, dependency_groups
from effc.analysis.layer_inputs import intermediate_session
from effc.analysis.weights import output_axis
from effc.calib import CalibrationData
from effc.errors import EffcError
from effc.ir import Model
from effc.ir.folding import WEIGHTED_OPS, fold_weight_subgraphs
from effc.ir.metrics import model_stats
from effc.passes.prune.plan import (
    activation_importance,
    activation_tensors,
    apply_drops,
    choose_drops,
    gamma_importance,
    plan_edits,
    predicted_macs,
    removed_params,
    weight_importance,
)
from effc.passes.prune.obs import reconstruction_importance
from effc.passes.prune.refit import refit_layers
from effc.passes.prune.sensitivity import analyze_sensitivity, sensitivity_ratios
from effc.pipeline.pass_base import Pass, PassResult, register_pass


@register_pass
class Prune(Pass):
    """Remove whole channels (dependency groups traced through the graph) and refit the next layers by least squares.

    ratio removes that fraction of each prunable group's channels (scope=uniform) or of all of them at one
    importance threshold (scope=global), or removes as many MACs as the uniform ratio would with per-group ratios
    chosen by measured sensitivity (scope=sensitivity: each group's output drift pruned alone at 25/50/75%,
    then a greedy least-drift-per-MAC allocation; one model run per group and level); per_layer={layer:ratio} names groups by a layer that produces them (then
    only those are pruned unless ratio is also given). reconstruct=true (the default) refits by least squares
    every linear layer from the first that lost input channels on (refit=all) or only those (refit=consumers)
    to reproduce the unpruned model's outputs; it needs calibration data and refuses without it; with
    reconstruct=false and a weight criterion (l1, l2, bn_gamma) none is needed. Channels are chosen by what the
    refit cannot rebuild (criterion=reconstruction, the default with reconstruct=true; l1 without it).
    analyze=true leaves the model unchanged and reports per-group drift at several ratios plus a per-layer
    allocation that removes target_macs of the MACs with the least drift.
    """

    name = "prune"
    kind = "lossy"

    @dataclass
    class Options:
        ratio: float = field(default=0.5, metadata={"help": "fraction of each group's channels to remove"})
        per_layer: dict[str, float] | None = field(default=None, metadata={"help": "ratios by layer name, e.g. {conv1:0.3}"})
        criterion: Literal["auto", "l1", "l2", "bn_gamma", "activation", "reconstruction"] = field(default="auto", metadata={
            "help": "channel importance; reconstruction: what the least-squares refit cannot recover (obs.py); "
                    "auto: reconstruction when reconstruct=true, else l1"})
        scope: Literal["auto", "uniform", "global", "sensitivity"] = field(default="auto", metadata={
            "help": "one ratio per group, one threshold for all, or ratios by measured sensitivity (same MACs); "
                    "auto: sensitivity when calibration data is given, else uniform"})
        round_to: int = field(default=8, metadata={"help": "kept channel counts are multiples of this"})
        reconstruct: bool = field(default=True, metadata={"help": "refit the following layers on calibration data"})
        refit: Literal["all", "consumers"] = field(default="all", metadata={
            "help": "layers reconstruct refits: every linear layer from the first pruned one on (it also corrects "
                    "the drift that reaches unpruned layers), or only those that lost input channels"})
        protect: tuple[str, ...] = field(default=(), metadata={"help": "layers that keep all their channels"})
        analyze: bool = field(default=False, metadata={"help": "report sensitivity and an allocation; change nothing"})
        target_macs: float = field(default=0.5, metadata={"help": "analyze: fraction of MACs the allocation removes"})
        samples: int = field(default=256, metadata={"help": "calibration samples used"})

        def validate(self):
            if not 0.0 <= self.ratio < 1.0:
                raise ValueError("ratio must be in [0, 1)")
            for layer, value in (self.per_layer or {}).items():
                if not 0.0 <= value < 1.0:
                    raise ValueError(f"per_layer ratio of {layer} must be in [0, 1)")
            if self.round_to < 1:
                raise ValueError("round_to must be at least 1")
            if not 0.0 < self.target_macs < 1.0:
                raise ValueError("target_macs must be in (0, 1)")
            if self.samples < 1:
                raise ValueError("samples must be at least 1")

    def check_context(self, ctx) -> None:
        needs = self._calibration_needs()
        if needs and ctx.calibration is None and not ctx.allow_random_calibration:
            raise EffcError(f"pass prune needs calibration data for {' and '.join(needs)}: give --calib DATA.npz, "
                            "or use reconstruct=false with a weight criterion (l1, l2, bn_gamma)")

    def _calibration_needs(self) -> list[str]:
        o = self.options
        flags = (("analyze=true", o.analyze), ("scope=sensitivity", o.scope == "sensitivity"),
                 ("reconstruct=true", o.reconstruct and not o.analyze),
                 ("criterion=activation", o.criterion == "activation"),
                 ("criterion=reconstruction", o.criterion == "reconstruction"))
        return [why for why, needed in flags if needed]

    def run(self, model: Model, ctx) -> PassResult:
        o = self.options
        work = model.copy() if o.analyze else model
        # an operand computed from constants (a bias as Reshape(b), as paddle2onnx writes it) reads as a variable
        # and would block every channel it touches
        folded = fold_weight_subgraphs(work, WEIGHTED_OPS + tuple(BINARY_OPS)) > 0
        work.infer_shapes()
        work.graph.toposort()
        groups = dependency_groups(work, o.protect)
        _check_layer_names(work, groups, o)
        prunable = [g for g in groups if g.blocked is None]
        feeds = self._feeds(work, ctx) if self._calibration_needs() else []
        criterion = self._criterion()
        means = _channel_means(work, prunable, feeds) if criterion == "activation" and prunable else {}
        surgeon = reconstruction_importance(work, prunable, feeds, ctx.seed) if criterion == "reconstruction" else {}
        scores = {g.id: surgeon[g.id] if g.id in surgeon else self._importance(g, means, ctx) for g in prunable}
        blocked = [{"group": g.name, "channels": g.size, "reason": g.blocked} for g in groups if g.blocked]
        if o.analyze:
            report = analyze_sensitivity(work, prunable, scores, feeds, round_to=o.round_to, target=o.target_macs, ctx=ctx)
            report["blocked"] = blocked
            return PassResult(False, {"groups": len(prunable)}, report)
        scope = self._scope(ctx)
        ratios, global_ratio = self._ratios(work, prunable, scope)
        if scope == "sensitivity" and global_ratio:
            free = [g for g in prunable if g.id not in ratios]
            ratios.update(sensitivity_ratios(work, free, scores, feeds, ratio=global_ratio, round_to=o.round_to, ctx=ctx))
            global_ratio = None
        drops = choose_drops(prunable, ratios, scores, round_to=o.round_to, global_ratio=global_ratio)
        if not drops:
            return PassResult(folded, {"groups": len(prunable), "groups_pruned": 0}, {"blocked": blocked})
        before = model_stats(model)
        original = model.copy() if o.reconstruct else None
        edits, _ = plan_edits(prunable, drops)
        predicted = predicted_macs(model, edits)
        params_predicted = before.params - removed_params(prunable, edits)
        kept_outputs = _kept_outputs(prunable, drops)
        apply_drops(model, prunable, drops)
        model.cleanup()
        model.infer_shapes()
        refits = []
        if o.reconstruct:
            layers = _refit_scope(model, prunable, drops, kept_outputs, o.refit)
            refits = refit_layers(original, model, layers, kept_outputs, feeds, ctx)
        after = model_stats(model)
        stats = {"groups": len(prunable), "groups_pruned": len(drops),
                 "channels_removed": int(sum(len(d) for d in drops.values())),
                 "macs_before": before.macs, "macs_after": after.macs, "macs_predicted": predicted,
                 "params_before": before.params, "params_after": after.params, "params_predicted": params_predicted,
                 "layers_refit": len(refits), "scope": scope}
        report = {"groups": [{"group": g.name, "channels": g.size, "kept": g.size - len(drops.get(g.id, ())),
                              "layers": [n.name for n in g.layers]} for g in prunable],
                  "blocked": blocked, "reconstruction": refits}
        if scope == "sensitivity":
            report["allocation"] = {g.name: ratios[g.id] for g in prunable if ratios.get(g.id)}
        return PassResult(True, stats, report)

    def _feeds(self, model: Model, ctx) -> list[dict[str, np.ndarray]]:
        specs = model.input_specs()
        data = ctx.calibration
        if data is None:
            data = CalibrationData.random(specs, min(self.options.samples, 16), seed=ctx.seed)
            ctx.warn("prune: using random calibration data; reconstruction and activation ranking will not match real inputs")
        return list(data.batches(specs, limit=self.options.samples))

    def _scope(self, ctx) -> str:
        if self.options.scope == "auto":  # a measured allocation needs real inputs to measure on
            return "sensitivity" if ctx.calibration is not None else "uniform"
        return self.options.scope

    def _criterion(self) -> str:
        o = self.options
        if o.criterion == "auto":
            return "reconstruction" if o.reconstruct else "l1"
        return o.criterion

    def _importance(self, group: ChannelGroup, channel_means, ctx) -> np.ndarray:
        criterion = self._criterion()
        if criterion == "bn_gamma":
            scores = gamma_importance(group)
            if scores is not None:
                return scores
            ctx.warn(f"prune: group {group.name} has no BatchNorm (folded?); ranking it by L1 weight norm")
            criterion = "l1"
        if criterion == "activation":
            return activation_importance(group, channel_means)
        if criterion == "reconstruction":  # a group whose consumers cannot all be refitted
            criterion = "l1"
        return weight_importance(group, criterion)

    def _ratios(self, model: Model, prunable: list[ChannelGroup], scope: str) -> tuple[dict[int, float], float | None]:
        o = self.options
        by_layer = {n.name: g for g in prunable for n in g.producers}
        ratios = {by_layer[layer].id: value for layer, value in (o.per_layer or {}).items()}
        rest = o.ratio if (o.per_layer is None or "ratio" in self.explicit) else 0.0
        if scope in ("global", "sensitivity"):
            return ratios, rest
        ratios.update({g.id: rest for g in prunable if g.id not in ratios})
        return ratios, None


def _check_layer_names(model: Model, groups: list[ChannelGroup], options) -> None:
    names = {n.name for n in model.graph.nodes}
    for layer in options.protect:
        if layer not in names:
            raise EffcError(f"pass prune: protect names {layer!r}, which is no layer of the model")
    prunable = {n.name for g in groups if g.blocked is None for n in g.producers}
    for layer in options.per_layer or {}:
        if layer not in names:
            raise EffcError(f"pass prune: per_layer names {layer!r}, which is no layer of the model")
        if layer not in prunable:
            reason = next((g.blocked for g in groups if any(n.name == layer for n in g.producers)), None)
            reason = reason or "its output channels are in no prunable group"
            raise EffcError(f"pass prune: layer {layer!r} cannot be pruned ({reason})")


def _kept_outputs(groups: list[ChannelGroup], drops) -> dict[str, np.ndarray]:
    """For every layer, the original output channels it keeps (all of them where no producer group shrank)."""
    kept = {}
    for group in groups:
        for member in group.members:
            node = member.node
            if node.op in ("Conv", "Gemm", "MatMul") and len(node.inputs) > 1 and hasattr(node.inputs[1], "values"):
                size = node.inputs[1].shape[output_axis(node)]
                kept.setdefault(node.name, set(range(size)))
                if member.role == "producer" and member.input_index == 1 and group.id in drops:
                    kept[node.name] -= set(group.channel_indices(member, drops[group.id]).tolist())
    return {name: np.array(sorted(channels)) for name, channels in kept.items()}


def _refit_scope(model: Model, groups: list[ChannelGroup], drops, kept_outputs: dict, scope: str) -> list[str]:
    """Names of the layers to refit; with scope "all", kept_outputs gains every layer it did not list (all kept)."""
    consumers = {n.name for g in groups if g.id in drops for n in g.consumers}
    if scope == "consumers":
        return sorted(consumers)
    order = [n for n in model.graph.nodes if n.op in ("Conv", "Gemm", "MatMul") and len(n.inputs) > 1
             and isinstance(n.inputs[1], gs.Constant)]
    first = next((i for i, n in enumerate(order) if n.name in consumers), len(order))
    for node in order[first:]:
        kept_outputs.setdefault(node.name, np.arange(node.inputs[1].shape[output_axis(node)]))
    return [n.name for n in order[first:]]


def _channel_means(model: Model, groups: list[ChannelGroup], feeds) -> dict[str, np.ndarray]:
    """Mean |activation| per channel-axis index of the tensors that rank `groups`, over `feeds`."""
    names = sorted({t.name for g in groups for t, _, _ in activation_tensors(g)})
    session = intermediate_session(model, names)
    sums: dict[str, np.ndarray] = {}
    for feed in feeds:
        for name, value in zip(names, session.run(names, dict(feed))):
            axes = tuple(i for i in range(value.ndim) if i != 1)
            sums[name] = sums.get(name, 0) + np.abs(value).mean(axis=axes)
    return {name: total / max(len(feeds), 1) for name, total in sums.items()}
