"""Pruning sensitivity: output drift of each group pruned alone at several ratios, and a per-layer allocation.

The allocation is greedy: starting from nothing pruned, it repeatedly raises the ratio of the group
(to any higher level) whose step costs the least added drift per MAC saved, until the target MACs reduction is met
(drifts are assumed to add up, as usual for this kind of allocation), then lowers any group whose
ratio can fall with the target still met.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from effc.analysis.channel_groups import ChannelGroup, dependency_groups
from effc.ir import Model
from effc.ir.metrics import model_stats
from effc.onnx_runtime import ort_session
from effc.passes.prune.plan import apply_drops, choose_drops, plan_edits, predicted_macs

RATIOS = (0.25, 0.5, 0.75)
FINE_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # scope=sensitivity: steps fine enough to land near the target


def relative_drift(reference: Sequence[Sequence[np.ndarray]], candidate: Sequence[Sequence[np.ndarray]]) -> float:
    """||candidate - reference|| / ||reference|| over all outputs and batches."""
    err = sum(float(np.sum((c.astype(np.float64) - r) ** 2)) for rs, cs in zip(reference, candidate) for r, c in zip(rs, cs))
    norm = sum(float(np.sum(r.astype(np.float64) ** 2)) for rs in reference for r in rs)
    return float(np.sqrt(err / max(norm, 1e-30)))


def group_drift(model: Model, groups: Sequence[ChannelGroup], scores: Mapping[int, np.ndarray], feeds, *,
                round_to: int, ctx, ratios: Sequence[float] = RATIOS) -> dict[int, dict[float, float]]:
    """Output drift of each group pruned alone at 0 and each of `ratios` (the model is left untouched)."""
    reference = [ort_session(model).run(None, dict(f)) for f in feeds]
    drift: dict[int, dict[float, float]] = {}
    with ctx.progress("pruning sensitivity", total=len(groups) * len(ratios)) as bar:
        for group in groups:
            drift[group.id] = {0.0: 0.0}
            for ratio in ratios:
                drops = choose_drops([group], {group.id: ratio}, scores, round_to=round_to)
                drift[group.id][ratio] = _drift_with(model, group.id, drops, feeds, reference) if drops else 0.0
                bar.advance()
    return drift


def sensitivity_ratios(model: Model, groups: Sequence[ChannelGroup], scores: Mapping[int, np.ndarray], feeds, *,
                       ratio: float, round_to: int, ctx) -> dict[int, float]:
    """Per-group ratios that remove as many MACs as `ratio` of every group would, spent where drift is least."""
    base_macs = model_stats(model).macs
    uniform = choose_drops(groups, {g.id: ratio for g in groups}, scores, round_to=round_to)
    target = 1.0 - predicted_macs(model, plan_edits(groups, uniform)[0]) / base_macs if base_macs else 0.0
    drift = group_drift(model, groups, scores, feeds, round_to=round_to, ctx=ctx, ratios=FINE_RATIOS)
    return _allocate(model, groups, scores, drift, round_to, target, base_macs, FINE_RATIOS)


def analyze_sensitivity(model: Model, groups: Sequence[ChannelGroup], scores: Mapping[int, np.ndarray], feeds,
                        *, round_to: int, target: float, ctx) -> dict:
    """Per-group drift at RATIOS (model untouched) and an allocation removing `target` of the MACs."""
    base_macs = model_stats(model).macs
    drift = group_drift(model, groups, scores, feeds, round_to=round_to, ctx=ctx)
    allocation = _allocate(model, groups, scores, drift, round_to, target, base_macs)
    chosen = choose_drops(groups, allocation, scores, round_to=round_to)
    macs_after = predicted_macs(model, plan_edits(groups, chosen)[0])
    per_layer = {g.name: allocation[g.id] for g in groups if allocation.get(g.id)}
    spec = ",".join(f"{name}:{ratio:g}" for name, ratio in per_layer.items())
    return {
        "ratios": list(RATIOS),
        "groups": [{"group": g.name, "channels": g.size, "layers": [n.name for n in g.layers],
                    "drift": {str(r): drift[g.id][r] for r in RATIOS}} for g in groups],
        "target_macs_reduction": target,
        "predicted_macs_reduction": 1.0 - macs_after / base_macs if base_macs else 0.0,
        "predicted_drift": float(sum(drift[g.id][allocation.get(g.id, 0.0)] for g in groups)),
        "allocation": per_layer,
        "spec": f"prune(per_layer={{{spec}}},round_to={round_to})",
    }


def _drift_with(model: Model, group_id: int, drops, feeds, reference) -> float:
    trial = model.copy()
    groups = {g.id: g for g in dependency_groups(trial)}  # same trace, same ids, on the copy's nodes
    apply_drops(trial, [groups[group_id]], drops)
    trial.cleanup().infer_shapes()
    session = ort_session(trial)
    return relative_drift(reference, [session.run(None, dict(f)) for f in feeds])


def _allocate(model: Model, groups: Sequence[ChannelGroup], scores, drift, round_to: int, target: float,
              base_macs: int, ratios: Sequence[float] = RATIOS) -> dict[int, float]:
    levels = (0.0, *ratios)
    state = {g.id: 0.0 for g in groups}

    def macs_of(ratios):
        return predicted_macs(model, plan_edits(groups, choose_drops(groups, ratios, scores, round_to=round_to))[0])

    current = base_macs
    while base_macs and 1.0 - current / base_macs < target:
        best = None
        for group in groups:
            for ratio in levels[levels.index(state[group.id]) + 1:]:
                trial = {**state, group.id: ratio}
                macs = macs_of(trial)
                saved = current - macs
                if saved <= 0:
                    continue
                cost = max(drift[group.id][ratio] - drift[group.id][state[group.id]], 0.0) / saved
                if best is None or cost < best[0]:
                    best = (cost, trial, macs)
        if best is None:
            break
        _, state, current = best
    return _lower_where_possible(state, groups, drift, levels, macs_of, base_macs, target)


def _lower_where_possible(state, groups, drift, levels, macs_of, base_macs: int, target: float) -> dict[int, float]:
    """Undo greedy overshoot: lower single groups' ratios while the target is still met, least drift first."""
    while True:
        options = []
        for group in groups:
            for ratio in levels[: levels.index(state[group.id])]:
                trial = {**state, group.id: ratio}
                if 1.0 - macs_of(trial) / base_macs >= target:
                    options.append((drift[group.id][ratio] - drift[group.id][state[group.id]], trial))
        gains = [o for o in options if o[0] < 0]
        if not gains:
            return state
        state = min(gains, key=lambda o: o[0])[1]
