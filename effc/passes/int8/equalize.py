"""Cross-layer equalization before int8: rescale channels so one per-tensor activation scale fits them all.

A channel group (effc/analysis/channel_groups.py: the producers that write a set of channels, the layers that read
them, residual Adds joining them) is rescaled by s_c > 0 per channel c: every producer's weight row and bias
of c are divided by s_c, so every tensor of the group carries x_c / s_c, and every consumer's weight column of c
is multiplied by s_c. The float model's outputs do not change when only positively homogeneous ops
(f(x / s) = f(x) / s) sit between producers and consumers: Relu, max/average pooling, Add/Sub joining
branches, Concat, reshapes, depthwise Conv (its bias divided by s_c too). Clip with an upper bound (ReLU6),
BatchNorm left unfolded, any other nonlinearity, a constant operand, a graph input or output, shared or
externally scaled weights block a group.

Scale (activation-range equalization, the alpha = 1/2 rule of SmoothQuant, Xiao et al. 2023, applied to the
channel groups of Nagel et al. 2019): with r_c = max |x_c| over the calibration set and over the group's
tensors, and w_c = max |W[:, c]| over every consumer's weights,

    s_c = (r_c / w_c) ** alpha,

so the activation range becomes r_c / s_c = r_c**(1-alpha) * w_c**alpha and the consumer column range
w_c * s_c = r_c**alpha * w_c**(1-alpha), both sqrt(r_c * w_c) at alpha = 1/2: a channel whose range is k times the others'
costs the per-tensor activation grid sqrt(k) instead of k, and the per-output-channel weight grid of its
consumers pays the other sqrt(k). Producers' weight rows and biases scale as a whole, so per-channel weight
quantization of the producers is unaffected. alpha = 1 flattens activations completely (all r_c / s_c equal
up to w_c) and moves every outlier into the consumers' weights; alpha = 0 equalizes nothing but the consumer
columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np
import onnx_graphsurgeon as gs

from effc.analysis.channel_groups import ChannelGroup, Member, dependency_groups
from effc.analysis.layer_inputs import intermediate_session
from effc.analysis.weights import WEIGHT_SCALE_KEY
from effc.ir import Model
from effc.onnx_runtime import run_session

# ops with f(x / s) = f(x) / s per channel for s > 0 (their other inputs, if any, are checked separately)
HOMOGENEOUS = frozenset({
    "Relu", "LeakyRelu", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Identity", "Dropout",
    "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Concat", "Add", "Sub", "Sum", "Mean", "Max", "Min", "Resize", "Pad",
})
SCALED_ROLES = ("producer", "consumer", "depthwise")
IGNORED_ROLES = ("reshape", "resize")  # shape inputs: unaffected by scaling
MAX_RATIO = 1e4  # s_c is kept within [1/MAX_RATIO, MAX_RATIO] of the group's median scale


@dataclass
class EqualizationPlan:
    """groups: the channel groups that can be rescaled exactly; blocked: group name -> why not."""

    groups: list[ChannelGroup] = field(default_factory=list)
    blocked: dict[str, str] = field(default_factory=dict)

    def tensor_names(self) -> list[str]:
        return sorted({t.name for g in self.groups for t, _, _ in g.tensors})


def plan_equalization(model: Model) -> EqualizationPlan:
    """The channel groups of `model` whose channels can be rescaled without changing its outputs."""
    model.infer_shapes()
    plan = EqualizationPlan()
    for group in dependency_groups(model):
        reason = _refusal(model, group)
        if reason is None:
            plan.groups.append(group)
        elif group.producers:  # groups nothing produces (inputs, shape tensors) are not worth a line
            plan.blocked[group.name] = reason
    return plan


def _refusal(model: Model, group: ChannelGroup) -> str | None:
    """None when `group` can be rescaled exactly, else why not."""
    if group.blocked is not None:
        return group.blocked
    if not group.consumers:
        return "no layer reads these channels"
    roles: dict[int, set[str]] = {}
    for member in group.members:
        if member.role not in SCALED_ROLES + IGNORED_ROLES:
            return f"{member.node.op} {member.node.name} ({member.role}) would need rescaling too"
        roles.setdefault(id(member.node), set()).add(member.role)
        if member.role in SCALED_ROLES:
            value = member.node.inputs[member.input_index]
            if not isinstance(value, gs.Constant) or value.values.dtype != np.float32:
                return f"{member.node.name}: input {member.input_index} is not a float constant"
            if WEIGHT_SCALE_KEY + value.name in model.metadata:
                return f"{member.node.name}: its weight has int8 scales chosen upstream"
    for node in group.producers:
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        if bias is not None and bias.name and not any(m.node is node and m.input_index == 2 for m in group.members):
            return f"{node.name}: its bias is shared by all channels"
    members = {id(m.node) for m in group.members}
    outputs = {id(t) for t in model.graph.outputs}
    for tensor, _, _ in group.tensors:
        if id(tensor) in outputs:
            return f"{tensor.name} is a graph output"
        nodes = [*tensor.inputs, *tensor.outputs]
        for node in nodes:
            if id(node) in members:
                continue
            reason = _not_homogeneous(node)
            if reason:
                return reason
    return None


def _not_homogeneous(node: gs.Node) -> str | None:
    if node.op == "Clip":
        low = node.inputs[1] if len(node.inputs) > 1 and node.inputs[1].name else None
        high = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
        zero_low = low is None or (isinstance(low, gs.Constant) and float(np.asarray(low.values)) == 0.0)
        return None if high is None and zero_low else f"Clip {node.name} clips at a fixed bound"
    if node.op not in HOMOGENEOUS:
        return f"{node.op} {node.name} is not positively homogeneous"
    if node.op == "Pad":
        mode = node.attrs.get("mode", "constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        value = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
        if mode == "constant" and value is not None and not (isinstance(value, gs.Constant) and float(np.asarray(value.values)) == 0.0):
            return f"Pad {node.name} pads with a nonzero value"
    return None


def channel_ranges(model: Model, plan: EqualizationPlan, feeds: Iterable[Mapping[str, np.ndarray]]) -> list[np.ndarray]:
    """Per group, max |x| of each channel over the feeds and over every tensor of the group."""
    names = plan.tensor_names()
    peaks: dict[str, np.ndarray] = {}
    session = intermediate_session(model, names)
    for feed in feeds:
        outputs = run_session(session, feed)
        for name in names:
            x = np.abs(np.asarray(outputs[name], np.float32))
            peak = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1).max(axis=1) if x.ndim >= 2 else x
            peaks[name] = peak if name not in peaks else np.maximum(peaks[name], peak)
    ranges = []
    for group in plan.groups:
        r = np.zeros(group.size)
        for tensor, offset, repeat in group.tensors:
            per_column = peaks[tensor.name][offset: offset + group.size * repeat]
            r = np.maximum(r, per_column.reshape(group.size, repeat).max(axis=1))
        ranges.append(r)
    return ranges


def consumer_ranges(group: ChannelGroup) -> np.ndarray:
    """max |W| of each channel's input column over every consumer of `group`."""
    w = np.zeros(group.size)
    for member in group.members:
        if member.role != "consumer":
            continue
        values = np.abs(np.asarray(member.node.inputs[member.input_index].values))
        moved = np.moveaxis(values, member.axis, 0)
        columns = moved[member.offset: member.offset + group.size * member.repeat].reshape(group.size, -1)
        w = np.maximum(w, columns.max(axis=1))
    return w


def equalization_scales(r: np.ndarray, w: np.ndarray, alpha: float) -> np.ndarray:
    """s_c = (r_c / w_c) ** alpha; 1 where a channel is never nonzero or never read; bounded around the median."""
    alive = (r > 0) & (w > 0)
    s = np.ones_like(r, dtype=np.float64)
    if not alive.any():
        return s
    s[alive] = (r[alive] / w[alive]) ** alpha
    middle = float(np.median(s[alive]))
    s[alive] = np.clip(s[alive] / middle, 1.0 / MAX_RATIO, MAX_RATIO)  # the common factor changes nothing
    return s


def rescale(model: Model, group: ChannelGroup, s: np.ndarray) -> None:
    """Divide the group's channels by `s` at every producer (rows, biases, depthwise biases); multiply consumer columns."""
    for member in group.members:
        if member.role not in SCALED_ROLES or (member.role == "depthwise" and member.input_index == 1):
            continue  # a depthwise weight maps x_c / s_c to y_c / s_c unchanged
        factor = s if member.role == "consumer" else 1.0 / s
        _scale_axis(model, member, group, factor)


def _scale_axis(model: Model, member: Member, group: ChannelGroup, factor: np.ndarray) -> None:
    node, index = member.node, member.input_index
    constant = node.inputs[index]
    values = np.asarray(constant.values)
    along = np.ones(values.shape[member.axis], np.float64)
    along[group.channel_indices(member, np.arange(group.size))] = np.repeat(factor, member.repeat)
    shape = [1] * values.ndim
    shape[member.axis] = -1
    scaled = (values.astype(np.float64) * along.reshape(shape)).astype(values.dtype)
    # a new constant: the old array may be shared with copies or with other nodes (DESIGN: never mutate in place)
    node.inputs[index] = gs.Constant(model.unique_name(f"{constant.name}_eq"), scaled)


def equalize(model: Model, feeds: Iterable[Mapping[str, np.ndarray]], alpha: float = 0.5) -> dict:
    """Rescale every group of `model` that can be rescaled exactly; return the report.

    Report: `groups`, one row per equalized group (name = first producer, channels, producers, consumers,
    the spread max/median of the channel ranges before and after), and `blocked`, group name -> reason.
    """
    plan = plan_equalization(model)
    report = {"alpha": alpha, "groups": [], "blocked": plan.blocked}
    if not plan.groups:
        return report
    ranges = channel_ranges(model, plan, feeds)
    for group, r in zip(plan.groups, ranges):
        w = consumer_ranges(group)
        s = equalization_scales(r, w, alpha)
        rescale(model, group, s)
        report["groups"].append({
            "name": group.name, "channels": group.size,
            "producers": [n.name for n in group.producers], "consumers": [n.name for n in group.consumers],
            "range_spread_before": _spread(r), "range_spread_after": _spread(r / s),
        })
    model.cleanup()
    return report


def _spread(r: np.ndarray) -> float | None:
    alive = r[r > 0]
    return None if alive.size == 0 else round(float(alive.max() / np.median(alive)), 2)
