"""Dependency groups: sets of channels that must be removed together, found by tracing the graph.

Every float tensor is described along its channel axis (axis 1) as a list of segments, each a
"channel space" (a union-find id) with a size and a repeat factor (a flattened channel covers
`repeat` consecutive columns). Layers that create channels (Conv, Gemm, MatMul with constant
weights) open a new space; BatchNorm, activations, pooling, Pad, Resize and depthwise Conv
carry it through; a grouped Conv (groups g) reads its input space and opens its output space as g
equal blocks, so pruning removes the same number of channels from every block and g stays; Add/Mul/... join the spaces of their inputs; Concat on the channel axis lays
segments end to end; Flatten/Reshape into a matrix multiplies the repeat. Anything else that
reads a space, and the graph's inputs and outputs, block it. A group is one space after
joining: all its members drop the same channel indices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from effc.ir import Model

UNARY_OPS = frozenset({
    "Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Celu",
    "Gelu", "Softplus", "Softsign", "Mish", "Erf", "Neg", "Abs", "Sqrt", "Exp", "Log", "Identity", "Dropout",
    "Floor", "Ceil", "Round", "Reciprocal", "Sign", "Cast",
})
POOL_OPS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool"})
BINARY_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "PRelu"})


@dataclass
class Member:
    """One place a group's channels live: `node.inputs[input_index]` sliced along `axis`.

    role: producer (drops output channels), consumer (drops input channels), grouped-consumer (a grouped
    Conv's weight, whose axis 1 indexes channels within a group), depthwise, batchnorm,
    constant (a broadcast operand of an elementwise op), reshape / resize (a shape input to rewrite).
    A channel c of the group is index `offset + c * repeat + j` (j < repeat) along the axis.
    """

    node: gs.Node
    role: str
    input_index: int
    axis: int
    offset: int = 0
    repeat: int = 1


@dataclass
class ChannelGroup:
    """Channels removed as one unit. `blocked` says why the group cannot be pruned (None if it can)."""

    id: int
    size: int
    members: list[Member] = field(default_factory=list)
    tensors: list[tuple[gs.Variable, int, int]] = field(default_factory=list)  # (tensor, offset, repeat)
    blocked: str | None = None
    blocks: int = 1  # grouped Convs read or make these channels: each of `blocks` equal runs loses as many

    @property
    def producers(self) -> list[gs.Node]:
        return _unique(m.node for m in self.members if m.role == "producer")

    @property
    def consumers(self) -> list[gs.Node]:
        return _unique(m.node for m in self.members if m.role == "consumer")

    @property
    def layers(self) -> list[gs.Node]:
        return _unique(m.node for m in self.members if m.role in ("producer", "consumer", "depthwise"))

    @property
    def name(self) -> str:
        """The first producer's name: how a group is named in reports and in `per_layer`."""
        producers = self.producers
        return producers[0].name if producers else f"group{self.id}"

    def channel_indices(self, member: Member, channels: np.ndarray) -> np.ndarray:
        """Indices along `member.axis` that hold `channels` of this group."""
        base = member.offset + np.asarray(channels, dtype=np.int64)[:, None] * member.repeat
        return (base + np.arange(member.repeat)[None, :]).ravel()


@dataclass
class _Segment:
    space: int
    size: int
    repeat: int = 1


class _Spaces:
    """Union-find over channel spaces, each holding its size, members, tensors and block reason."""

    def __init__(self):
        self.parent: list[int] = []
        self.size: list[int] = []
        self.members: list[list[Member]] = []
        self.tensors: list[list[tuple[gs.Variable, int, int]]] = []
        self.blocked: list[str | None] = []
        self.blocks: list[int] = []

    def new(self, size: int, blocked: str | None = None, blocks: int = 1) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.blocks.append(blocks)
        self.members.append([])
        self.tensors.append([])
        self.blocked.append(blocked)
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        self.parent[b] = a
        self.members[a] += self.members[b]
        self.tensors[a] += self.tensors[b]
        self.blocked[a] = self.blocked[a] or self.blocked[b]
        self.require_blocks(a, self.blocks[b])

    def require_blocks(self, i: int, blocks: int) -> None:
        """Channels of space `i` must be removed evenly from `blocks` equal runs (from grouped Convs)."""
        root = self.find(i)
        self.blocks[root] = math.lcm(self.blocks[root], blocks)
        if self.size[root] % self.blocks[root]:
            self.block(root, f"grouped Convs split {self.size[root]} channels into {self.blocks[root]} blocks")

    def block(self, i: int, reason: str) -> None:
        root = self.find(i)
        self.blocked[root] = self.blocked[root] or reason


def dependency_groups(model: Model, protect: tuple[str, ...] | list[str] = ()) -> list[ChannelGroup]:
    """Trace `model` (shapes inferred, topologically sorted) into channel groups, blocked ones included.

    Groups touching a node named in `protect` are blocked, so those layers keep every channel.
    """
    tracer = _Tracer()
    graph = model.graph
    for tensor in graph.inputs:
        rank = len(tensor.shape or ())
        if rank >= 2 and isinstance(tensor.shape[1], int):
            tracer.segs[tensor.name] = [_Segment(tracer.spaces.new(tensor.shape[1], "network input"), tensor.shape[1])]
    for node in graph.nodes:
        tracer.visit(node)
    for tensor in graph.outputs:
        tracer.block(tensor, "network output")
    protected = set(protect)
    order = {id(node): i for i, node in enumerate(graph.nodes)}
    groups = []
    spaces = tracer.spaces
    for i in range(len(spaces.parent)):
        if spaces.find(i) != i:
            continue
        members = sorted(spaces.members[i], key=lambda m: order[id(m.node)])
        group = ChannelGroup(len(groups), spaces.size[i], members, spaces.tensors[i], spaces.blocked[i],
                             spaces.blocks[i])
        if group.blocked is None and not group.producers:
            group.blocked = "no layer produces these channels"
        hit = next((m.node.name for m in group.members if m.node.name in protected), None)
        if group.blocked is None and hit is not None:
            group.blocked = f"protected layer {hit}"
        groups.append(group)
    return groups


class _Tracer:
    def __init__(self):
        self.spaces = _Spaces()
        self.segs: dict[str, list[_Segment]] = {}

    # -- helpers -------------------------------------------------------------------------------
    def block(self, tensor: gs.Tensor, reason: str) -> None:
        for seg in self.segs.get(tensor.name, ()):
            self.spaces.block(seg.space, reason)

    def attach(self, tensor: gs.Tensor, node: gs.Node, role: str, input_index: int, axis: int) -> None:
        offset = 0
        for seg in self.segs.get(tensor.name, ()):
            root = self.spaces.find(seg.space)
            self.spaces.members[root].append(Member(node, role, input_index, axis, offset, seg.repeat))
            offset += seg.size * seg.repeat

    def carry(self, source: gs.Tensor, target: gs.Tensor, repeat: int = 1) -> None:
        segs = self.segs.get(source.name)
        if segs is None:
            return
        self.segs[target.name] = [_Segment(s.space, s.size, s.repeat * repeat) for s in segs]
        self._record(target)

    def open(self, tensor: gs.Tensor, size: int) -> int:
        space = self.spaces.new(size)
        self.segs[tensor.name] = [_Segment(space, size)]
        self._record(tensor)
        return space

    def _record(self, tensor: gs.Tensor) -> None:
        offset = 0
        for seg in self.segs[tensor.name]:
            self.spaces.tensors[self.spaces.find(seg.space)].append((tensor, offset, seg.repeat))
            offset += seg.size * seg.repeat

    def refuse(self, node: gs.Node, reason: str | None = None) -> None:
        for tensor in node.inputs:
            self.block(tensor, reason or f"{node.op} {node.name} reads them")

    # -- the walk ------------------------------------------------------------------------------
    def visit(self, node: gs.Node) -> None:
        op = node.op
        handler = getattr(self, f"_visit_{op}", None)
        if handler is not None:
            handler(node)
        elif op in UNARY_OPS or op in POOL_OPS:
            self._passthrough(node)
        elif op in BINARY_OPS:
            self._elementwise(node)
        else:
            self.refuse(node)

    def _passthrough(self, node: gs.Node) -> None:
        extra_used = any(o.outputs for o in node.outputs[1:])  # e.g. MaxPool indices, Dropout mask
        others_constant = all(isinstance(t, gs.Constant) or not t.name for t in node.inputs[1:])
        if extra_used or not others_constant or not node.inputs:
            self.refuse(node)
            return
        self.carry(node.inputs[0], node.outputs[0])

    def _visit_Conv(self, node: gs.Node) -> None:
        x, w = node.inputs[0], node.inputs[1]
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        group = int(node.attrs.get("group", 1))
        if not isinstance(w, gs.Constant) or (bias is not None and bias.name and not isinstance(bias, gs.Constant)):
            self.refuse(node)
            return
        c_out, c_in = int(w.shape[0]), int(w.shape[1]) * group
        has_bias = bias is not None and bias.name != ""
        if group == 1:
            self.attach(x, node, "consumer", 1, 1)
            self.open(node.outputs[0], c_out)
            self.attach(node.outputs[0], node, "producer", 1, 0)
            if has_bias:
                self.attach(node.outputs[0], node, "producer", 2, 0)
        elif group == c_in == c_out and x.name in self.segs:
            self.carry(x, node.outputs[0])
            self.attach(x, node, "depthwise", 1, 0)
            if has_bias:
                self.attach(x, node, "depthwise", 2, 0)
        elif len(self.segs.get(x.name, ())) == 1 and self.segs[x.name][0].repeat == 1:
            # every group keeps the same share of its input and output channels; the group count stays
            self.spaces.require_blocks(self.segs[x.name][0].space, group)
            self.attach(x, node, "grouped-consumer", 1, 1)
            self.open(node.outputs[0], c_out)
            self.spaces.require_blocks(self.segs[node.outputs[0].name][0].space, group)
            self.attach(node.outputs[0], node, "producer", 1, 0)
            if has_bias:
                self.attach(node.outputs[0], node, "producer", 2, 0)
        else:
            self.refuse(node, f"grouped Conv {node.name} (group={group}) reads a concatenation of them")

    def _visit_Gemm(self, node: gs.Node) -> None:
        a, b = node.inputs[0], node.inputs[1]
        c = node.inputs[2] if len(node.inputs) > 2 else None
        trans_b = int(node.attrs.get("transB", 0))
        ok = (isinstance(b, gs.Constant) and b.values.ndim == 2 and not node.attrs.get("transA", 0)
              and (c is None or not c.name or isinstance(c, gs.Constant)))
        if not ok:
            self.refuse(node)
            return
        self.attach(a, node, "consumer", 1, 1 if trans_b else 0)
        n_out = int(b.shape[0] if trans_b else b.shape[1])
        self.open(node.outputs[0], n_out)
        self.attach(node.outputs[0], node, "producer", 1, 0 if trans_b else 1)
        if c is not None and c.name and c.values.ndim >= 1 and c.shape[-1] == n_out and n_out > 1:
            self.attach(node.outputs[0], node, "producer", 2, c.values.ndim - 1)

    def _visit_MatMul(self, node: gs.Node) -> None:
        a, b = node.inputs
        if not (isinstance(b, gs.Constant) and b.values.ndim == 2 and len(a.shape or ()) == 2):
            self.refuse(node)
            return
        self.attach(a, node, "consumer", 1, 0)
        self.open(node.outputs[0], int(b.shape[1]))
        self.attach(node.outputs[0], node, "producer", 1, 1)

    def _visit_BatchNormalization(self, node: gs.Node) -> None:
        if not all(isinstance(t, gs.Constant) for t in node.inputs[1:5]) or any(o.outputs for o in node.outputs[1:]):
            self.refuse(node)
            return
        self.carry(node.inputs[0], node.outputs[0])
        for i in range(1, 5):
            self.attach(node.inputs[0], node, "batchnorm", i, 0)

    def _visit_Pad(self, node: gs.Node) -> None:
        x = node.inputs[0]
        pads = node.inputs[1] if len(node.inputs) > 1 else None
        axes = node.inputs[3] if len(node.inputs) > 3 and node.inputs[3].name else None
        rank = len(x.shape or ())
        if not isinstance(pads, gs.Constant) or axes is not None or rank < 2:
            self.refuse(node)
            return
        values = pads.values.ravel()
        if values[1] != 0 or values[rank + 1] != 0:
            self.refuse(node, f"Pad {node.name} pads the channel axis")
            return
        self.carry(x, node.outputs[0])

    def _visit_Resize(self, node: gs.Node) -> None:
        inputs = list(node.inputs) + [None] * (4 - len(node.inputs))
        scales, sizes = inputs[2], inputs[3]
        if sizes is not None and sizes.name and isinstance(sizes, gs.Constant) and not node.attrs.get("axes"):
            self.carry(node.inputs[0], node.outputs[0])
            self.attach(node.inputs[0], node, "resize", 3, 0)
        elif (isinstance(scales, gs.Constant) and scales.values.size > 1 and scales.values[1] == 1
              and not node.attrs.get("axes")):
            self.carry(node.inputs[0], node.outputs[0])
        else:
            self.refuse(node)

    def _visit_Flatten(self, node: gs.Node) -> None:
        x = node.inputs[0]
        shape = x.shape or ()
        if int(node.attrs.get("axis", 1)) != 1 or len(shape) < 2 or not all(isinstance(d, int) for d in shape[2:]):
            self.refuse(node)
            return
        self.carry(x, node.outputs[0], repeat=int(np.prod(shape[2:], dtype=np.int64)))

    def _visit_Reshape(self, node: gs.Node) -> None:
        x, target = node.inputs[0], node.inputs[1]
        shape, out = x.shape or (), node.outputs[0].shape or ()
        flattens = (isinstance(target, gs.Constant) and len(shape) >= 2 and len(out) == 2
                    and all(isinstance(d, int) for d in shape[2:]) and out[0] == shape[0])
        if not flattens:
            self.refuse(node)
            return
        self.carry(x, node.outputs[0], repeat=int(np.prod(shape[2:], dtype=np.int64)))
        self.attach(node.outputs[0], node, "reshape", 1, 0)

    def _visit_Squeeze(self, node: gs.Node) -> None:
        self._squeeze_like(node, lambda axes, rank: rank)

    def _visit_Unsqueeze(self, node: gs.Node) -> None:
        self._squeeze_like(node, lambda axes, rank: rank + len(axes))

    def _squeeze_like(self, node: gs.Node, out_rank) -> None:
        x = node.inputs[0]
        axes = node.inputs[1] if len(node.inputs) > 1 else None
        rank = len(x.shape or ())
        if not isinstance(axes, gs.Constant) or rank < 2:
            self.refuse(node)
            return
        values = [int(a) % out_rank(axes.values.ravel(), rank) for a in axes.values.ravel()]
        if any(a in (0, 1) for a in values):
            self.refuse(node)
            return
        self.carry(x, node.outputs[0])

    def _visit_Concat(self, node: gs.Node) -> None:
        out = node.outputs[0]
        rank = len(out.shape or ())
        axis = int(node.attrs["axis"]) % rank if rank else -1
        if axis != 1:
            self._elementwise(node)
            return
        if not all(t.name in self.segs for t in node.inputs):
            self.refuse(node)
            return
        self.segs[out.name] = [_Segment(s.space, s.size, s.repeat) for t in node.inputs for s in self.segs[t.name]]
        self._record(out)

    def _elementwise(self, node: gs.Node) -> None:
        out = node.outputs[0]
        rank = len(out.shape or ())
        variables = [t for t in node.inputs if not isinstance(t, gs.Constant)]
        if rank < 2 or not variables:
            self.refuse(node)
            return
        first = variables[0]
        total = out.shape[1]
        for tensor in variables:
            if tensor.name not in self.segs or len(tensor.shape or ()) != rank or tensor.shape[1] != total:
                self.refuse(node, f"{node.op} {node.name} broadcasts along the channel axis")
                return
            if [(s.size, s.repeat) for s in self.segs[tensor.name]] != [(s.size, s.repeat) for s in self.segs[first.name]]:
                self.refuse(node, f"{node.op} {node.name} joins differently split channels")
                return
        for i, tensor in enumerate(node.inputs):
            if not isinstance(tensor, gs.Constant):
                continue
            const_rank = tensor.values.ndim
            axis = 1 - (rank - const_rank)
            if axis >= 0 and tensor.values.shape[axis] == total and total > 1:
                self.attach(first, node, "constant", i, axis)
            elif axis >= 0 and tensor.values.shape[axis] != 1:
                self.refuse(node)
                return
        for tensor in variables[1:]:
            for a, b in zip(self.segs[first.name], self.segs[tensor.name]):
                self.spaces.union(a.space, b.space)
        self.carry(first, out)


def _unique(nodes) -> list[gs.Node]:
    seen, result = set(), []
    for node in nodes:
        if id(node) not in seen:
            seen.add(id(node))
            result.append(node)
    return result
