"""Channel importance from the reconstruction the refit will do (criterion=reconstruction): Optimal Brain Surgeon
over whole input channels of a group's consumers.

A consumer computes y = x W over input features x (im2col patches: channel c owns a block B_c of features). With
H = X^T X from calibration inputs, removing channel c and refitting the rest by least squares (what
`reconstruct=true` does) costs tr(W_Bc^T [(H^-1)_BcBc]^-1 W_Bc) of output energy, and the best compensation
updates W and H^-1 in closed form (Hassibi & Stork 1993; group form as in OBC/GPTQ). Channels are removed
greedily, cheapest first, with the costs of every consumer of the group (each normalised by its output energy)
summed; a channel's score is the step at which it went, so the lowest-scored n channels are the greedy choice
for any n. Weight norms rank what a plain magnitude criterion would not: a large filter whose output the other
channels can reproduce goes early.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from effc.analysis.channel_groups import ChannelGroup
from effc.analysis.layer_inputs import intermediate_session, sample_input_rows
from effc.analysis.least_squares import rows_to_sample
from effc.ir import Model
from effc.passes.prune.refit import linear_form, refittable

DAMP = 1e-3  # relative to the mean diagonal of H
MAX_FEATURES = 4096  # consumers with more input features are left out (H^-1 updates grow with features^2)


def consumer_blocks(group: ChannelGroup, node: gs.Node) -> list[np.ndarray] | None:
    """Per group channel, the consumer's input-feature indices (rows of its weight as [features, outputs]); None
    when the consumer cannot be refitted or reads the group in a way this does not follow."""
    members = [m for m in group.members if m.node is node and m.role == "consumer" and m.input_index == 1]
    if len(members) != 1 or not refittable(node):
        return None
    member = members[0]
    weight = node.inputs[1]
    if node.op == "Conv":
        per_channel = int(np.prod(weight.shape[2:]))
        if member.axis != 1:
            return None
        return [(group.channel_indices(member, [c])[:, None] * per_channel + np.arange(per_channel)).ravel()
                for c in range(group.size)]
    transposed = node.op == "Gemm" and node.attrs.get("transB", 0)
    if member.axis != (1 if transposed else 0):
        return None
    return [group.channel_indices(member, [c]) for c in range(group.size)]


def reconstruction_importance(model: Model, groups: list[ChannelGroup], feeds, seed: int) -> dict[int, np.ndarray]:
    """Scores (higher = keep) for the groups whose consumers can all be refitted; the others are left out."""
    weights: dict[str, np.ndarray] = {}  # each consumer's weight as [features, outputs], built once
    plans = {}
    for group in groups:
        consumers = group.consumers
        blocks = [consumer_blocks(group, node) for node in consumers]
        if not consumers or any(b is None for b in blocks):
            continue
        for node in consumers:
            if node.name not in weights:
                weights[node.name] = linear_form(node)[0]
        if all(len(weights[n.name]) <= MAX_FEATURES for n in consumers):
            plans[group.id] = list(zip(consumers, blocks))
    if not plans or not feeds:
        return {}
    nodes = {id(n): n for plan in plans.values() for n, _ in plan}
    hessians = _hessians(model, list(nodes.values()), {name: len(w) for name, w in weights.items()}, feeds, seed)
    return {gid: _greedy_order([(hessians[n.name], weights[n.name], b) for n, b in plan], len(plan[0][1]))
            for gid, plan in plans.items()}


def _greedy_order(consumers: list[tuple[np.ndarray, np.ndarray, list[np.ndarray]]], channels: int) -> np.ndarray:
    states = []
    for h, w, blocks in consumers:
        damp = DAMP * max(float(np.trace(h)) / len(h), 1e-12)
        hinv = np.linalg.inv(h + damp * np.eye(len(h)))
        energy = max(float(np.einsum("fo,fg,go->", w, h, w)), 1e-30)
        states.append([hinv, w.copy(), blocks, energy])
    scores = np.zeros(channels)
    alive = list(range(channels))
    for step in range(channels):
        costs = np.zeros(len(alive))
        for hinv, w, blocks, energy in states:
            costs += np.array([_removal_cost(hinv, w, blocks[c]) for c in alive]) / energy
        chosen = alive.pop(int(np.argmin(costs)))
        scores[chosen] = step
        if not alive:
            break
        for state in states:
            state[0], state[1] = _remove(state[0], state[1], state[2][chosen])
    return scores


def _removal_cost(hinv: np.ndarray, w: np.ndarray, block: np.ndarray) -> float:
    wb = w[block]
    return float(np.sum(wb * np.linalg.solve(hinv[np.ix_(block, block)], wb)))


def _remove(hinv: np.ndarray, w: np.ndarray, block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The weights compensated for the block's removal, and H^-1 of the remaining features (the block's rows and
    columns become zero)."""
    inner = np.linalg.inv(hinv[np.ix_(block, block)])
    columns = hinv[:, block]
    w = w - columns @ (inner @ w[block])
    hinv = hinv - columns @ inner @ columns.T
    w[block] = 0.0
    hinv[block, :] = 0.0
    hinv[:, block] = 0.0
    return hinv, w


def _hessians(model: Model, nodes: list[gs.Node], features: dict[str, int], feeds, seed: int) -> dict[str, np.ndarray]:
    names = sorted({n.inputs[0].name for n in nodes})
    session = intermediate_session(model, names)
    per_feed = {n.name: max(1, rows_to_sample(features[n.name]) // len(feeds)) for n in nodes}
    sums = {n.name: np.zeros((features[n.name], features[n.name])) for n in nodes}
    for f, feed in enumerate(feeds):
        values = dict(zip(names, session.run(names, dict(feed))))
        for position, node in enumerate(nodes):
            rows = sample_input_rows(node, values[node.inputs[0].name], per_feed[node.name],
                                     np.random.default_rng([seed, position, f])).astype(np.float64)
            sums[node.name] += rows.T @ rows
    return sums
