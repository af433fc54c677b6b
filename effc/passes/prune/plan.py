"""Which channels to remove (criteria, ratios, rounding, scope) and removing them from the graph."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Mapping

import numpy as np
import onnx_graphsurgeon as gs

from effc.analysis.channel_groups import ChannelGroup
from effc.ir import Model
from effc.ir.metrics import layer_macs

# (id(node), input index) -> {axis: indices to delete along that axis}; a grouped Conv's weight has the key
# GROUPED_INPUT instead of axis 1: input channel indices of the whole layer, each group dropping as many of its own
Edits = dict[tuple[int, int], dict[int | str, set[int]]]
GROUPED_INPUT = "grouped-input"


def kept_count(size: int, ratio: float, round_to: int) -> int:
    """Channels a group of `size` keeps after removing `ratio` of them, a multiple of `round_to` where it can be."""
    if ratio <= 0:
        return size
    keep = size * (1.0 - ratio)
    if round_to > 1:
        keep = max(round_to, round(keep / round_to) * round_to)
    return int(min(size, max(1, round(keep))))


def weight_importance(group: ChannelGroup, norm: str) -> np.ndarray:
    """Per-channel L1 or L2 norm of the producers' weights, each producer scaled to mean 1, summed."""
    total = np.zeros(group.size)
    for member in group.members:
        if member.role != "producer" or member.input_index != 1:
            continue
        w = np.moveaxis(np.asarray(member.node.inputs[1].values, dtype=np.float64), member.axis, 0)
        w = w[member.offset: member.offset + group.size * member.repeat].reshape(group.size, -1)
        score = np.abs(w).sum(axis=1) if norm == "l1" else np.sqrt((w * w).sum(axis=1))
        total += score / max(score.mean(), 1e-12)
    return total


def gamma_importance(group: ChannelGroup) -> np.ndarray | None:
    """Per-channel |BatchNorm scale| summed over the group's BatchNorms (each scaled to mean 1); None without any."""
    scores = []
    for member in group.members:
        if member.role == "batchnorm" and member.input_index == 1:
            gamma = np.abs(np.asarray(member.node.inputs[1].values, dtype=np.float64))
            part = gamma[group.channel_indices(member, np.arange(group.size))].reshape(group.size, -1).mean(axis=1)
            scores.append(part / max(part.mean(), 1e-12))
    return np.sum(scores, axis=0) if scores else None


def activation_tensors(group: ChannelGroup) -> list[tuple[gs.Variable, int, int]]:
    """The tensors whose activations rank a group's channels: what its consumers read (else all its tensors)."""
    consumers = {id(n) for n in group.consumers}
    read = [(t, off, rep) for t, off, rep in group.tensors if any(id(c) in consumers for c in t.outputs)]
    return read or list(group.tensors)


def activation_importance(group: ChannelGroup, channel_means: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per-channel mean |activation| over the group's tensors, from `channel_means` (tensor name -> mean |x| per index)."""
    total = np.zeros(group.size)
    for tensor, offset, repeat in activation_tensors(group):
        means = channel_means[tensor.name]
        part = means[offset: offset + group.size * repeat].reshape(group.size, repeat).mean(axis=1)
        total += part / max(part.mean(), 1e-12)
    return total


def choose_drops(groups: Iterable[ChannelGroup], ratios: Mapping[int, float], scores: Mapping[int, np.ndarray],
                 *, round_to: int, global_ratio: float | None = None) -> dict[int, np.ndarray]:
    """Channel indices to remove per group id: the least important ones.

    `ratios` gives each group's fraction (uniform scope). With `global_ratio`, groups not in `ratios`
    instead share one threshold over their mean-normalized scores, so that `global_ratio` of all their
    channels go; each group keeps at least `round_to` channels (and a multiple of it).
    """
    groups = list(groups)
    ratios = dict(ratios)
    if global_ratio is not None:
        pooled = [g for g in groups if g.id not in ratios]
        if pooled:
            normalized = {g.id: scores[g.id] / max(scores[g.id].mean(), 1e-12) for g in pooled}
            everything = np.sort(np.concatenate(list(normalized.values())))
            cut = everything[min(len(everything) - 1, int(len(everything) * global_ratio))]
            for g in pooled:
                ratios[g.id] = float(np.mean(normalized[g.id] < cut)) if global_ratio > 0 else 0.0
    drops = {}
    for group in groups:
        keep = kept_count(group.size, ratios.get(group.id, 0.0), round_to)
        if keep >= group.size:
            continue
        if group.blocks > 1:  # the same count from every block, the least important of each
            run = group.size // group.blocks
            drop = run - max(1, round(keep / group.blocks))
            if drop > 0:
                drops[group.id] = np.sort(np.concatenate([
                    start + np.argsort(scores[group.id][start:start + run], kind="stable")[:drop]
                    for start in range(0, group.size, run)]))
            continue
        order = np.argsort(scores[group.id], kind="stable")
        drops[group.id] = np.sort(order[: group.size - keep])
    return drops


def plan_edits(groups: Iterable[ChannelGroup], drops: Mapping[int, np.ndarray]) -> tuple[Edits, dict[int, tuple[gs.Node, int]]]:
    """Tensor slices implied by `drops`, plus for each reshape/resize node the count of entries it loses."""
    edits: Edits = defaultdict(lambda: defaultdict(set))
    shrink: dict[int, tuple[gs.Node, int]] = {}
    for group in groups:
        if group.id not in drops:
            continue
        for member in group.members:
            indices = group.channel_indices(member, drops[group.id])
            if member.role in ("reshape", "resize"):
                node, count = shrink.get(id(member.node), (member.node, 0))
                shrink[id(member.node)] = (node, count + len(indices))
            else:
                axis = GROUPED_INPUT if member.role == "grouped-consumer" else member.axis
                edits[(id(member.node), member.input_index)][axis].update(int(i) for i in indices)
    return edits, shrink


def predicted_macs(model: Model, edits: Edits) -> int:
    """MACs of `model` once `edits` are applied: each layer's MACs scale with the kept share of each weight axis."""
    total = 0
    by_name = {n.name: n for n in model.graph.nodes}
    for name, macs in layer_macs(model).items():
        node = by_name[name]
        factor = 1.0
        for axis, indices in edits.get((id(node), 1), {}).items():
            if axis == GROUPED_INPUT:
                factor *= 1.0 - len(indices) / (node.inputs[1].shape[1] * int(node.attrs.get("group", 1)))
            else:
                factor *= 1.0 - len(indices) / node.inputs[1].shape[axis]
        total += macs * factor
    return int(round(total))


def removed_params(groups: Iterable[ChannelGroup], edits: Edits) -> int:
    """Weight elements that `edits` delete (before any refit adds a bias)."""
    nodes = {id(m.node): m.node for g in groups for m in g.members}
    removed = 0
    for (node_id, index), axes in edits.items():
        shape = list(nodes[node_id].inputs[index].shape)
        kept = list(shape)
        for axis, indices in axes.items():
            if axis == GROUPED_INPUT:
                kept[1] -= len(indices) // int(nodes[node_id].attrs.get("group", 1))
            else:
                kept[axis] -= len(indices)
        removed += int(np.prod(shape)) - int(np.prod(kept))
    return removed


def apply_drops(model: Model, groups: Iterable[ChannelGroup], drops: Mapping[int, np.ndarray]) -> int:
    """Remove the channels in `drops` from every member of their groups; returns the number of tensors rewritten."""
    groups = list(groups)
    edits, shrink = plan_edits(groups, drops)
    nodes = {id(n): n for g in groups for n in (m.node for m in g.members)}
    for (node_id, index), axes in edits.items():
        node = nodes[node_id]
        tensor = node.inputs[index]
        values = np.asarray(tensor.values)
        for axis, indices in sorted((a, i) for a, i in axes.items() if a != GROUPED_INPUT):
            values = np.delete(values, sorted(indices), axis=axis)
        if GROUPED_INPUT in axes:
            values = _drop_grouped_inputs(values, sorted(axes[GROUPED_INPUT]), int(node.attrs["group"]))
        node.inputs[index] = gs.Constant(model.unique_name(f"{tensor.name}_pruned"), np.ascontiguousarray(values))
        group = int(node.attrs.get("group", 1))
        if node.op == "Conv" and group > 1 and index == 1 and group == tensor.shape[0] and tensor.shape[1] == 1:
            node.attrs["group"] = int(values.shape[0])  # depthwise: one group per channel left
    for node, count in shrink.values():
        index = 1 if node.op == "Reshape" else 3
        tensor = node.inputs[index]
        values = np.array(tensor.values, copy=True)
        if values[1] > 0:
            values[1] -= count
        node.inputs[index] = gs.Constant(model.unique_name(f"{tensor.name}_pruned"), values)
    return len(edits) + len(shrink)


def _drop_grouped_inputs(weight: np.ndarray, channels: list[int], groups: int) -> np.ndarray:
    """A grouped Conv's weight [O, I/g, ...] without the layer input `channels` (each group loses as many): the rows
    of group k keep the columns of group k's remaining channels."""
    per_group = weight.shape[1]
    rows = weight.shape[0] // groups
    parts = []
    for k in range(groups):
        local = [c - k * per_group for c in channels if k * per_group <= c < (k + 1) * per_group]
        parts.append(np.delete(weight[k * rows:(k + 1) * rows], local, axis=1))
    return np.concatenate(parts, axis=0)
