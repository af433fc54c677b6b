"""Rewrites that make weights plain constants: chains computing a weight from constants (a clustered weight's decoder)
evaluated, and BatchNormalization after a Conv folded into its weights (fold-bn, cluster and int8 all need them)."""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import onnxruntime as ort

from effc.ir import Model
from effc.ir.model import repack_narrow_constants

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def fold_weight_subgraphs(model: Model, ops=WEIGHTED_OPS) -> int:
    """Fold node chains computing an operand of `ops` from constants only (e.g. a clustered weight's decoder).

    Returns how many weight/bias tensors became constants. Input 0 of a weighted op (its data) is never one.
    """
    graph = model.graph
    producers = {id(t): node for node in graph.nodes for t in node.outputs}
    folded = 0
    for node in [n for n in graph.nodes if n.op in ops]:
        for index, tensor in enumerate(list(node.inputs)):
            if (index == 0 and node.op in WEIGHTED_OPS) or not isinstance(tensor, gs.Variable) or not tensor.name:
                continue
            chain = _constant_ancestors(tensor, producers, graph)
            if chain is None:
                continue
            value = _evaluate(chain, tensor, graph.opset)
            name = tensor.name  # keep it: metadata (effc.int8_weight_scale.<name>) refers to the weight by name
            tensor.name = model.unique_name(f"{name}/unfolded")
            constant = gs.Constant(name, value)
            for consumer in list(tensor.outputs):
                for i, t in enumerate(list(consumer.inputs)):
                    if t is tensor:
                        consumer.inputs[i] = constant
            folded += 1
    if folded:
        model.cleanup()
    return folded


def _evaluate(chain: list[gs.Node], tensor: gs.Variable, opset: int) -> np.ndarray:
    order = {id(n): i for i, n in enumerate(chain)}
    sub = gs.Graph(nodes=sorted(chain, key=lambda n: order[id(n)]), inputs=[], outputs=[tensor], opset=opset)
    sub.toposort()
    repack_narrow_constants(sub)
    proto = gs.export_onnx(sub, do_type_check=False)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {})[0]


def _constant_ancestors(tensor: gs.Variable, producers: dict, graph: gs.Graph) -> list[gs.Node] | None:
    """The nodes computing `tensor`, or None when any of them reads a graph input."""
    graph_inputs = {id(t) for t in graph.inputs}
    seen: dict[int, gs.Node] = {}
    stack = [tensor]
    while stack:
        t = stack.pop()
        if isinstance(t, gs.Constant) or (t.name == "" and not t.inputs):
            continue
        if id(t) in graph_inputs or id(t) not in producers:
            return None
        node = producers[id(t)]
        if id(node) not in seen:
            if node.attrs.get("body") is not None or node.op in ("If", "Loop", "Scan"):
                return None
            seen[id(node)] = node
            stack.extend(node.inputs)
    return list(seen.values())


def fold_batchnorm(model: Model) -> int:
    """Fold BatchNormalization that follows a Conv, ConvTranspose (group 1) or Gemm (sole consumer, constant
    parameters) into that layer's weight and bias. Returns the count."""
    graph = model.graph
    outputs = {id(t) for t in graph.outputs}
    folded = 0
    for bn in [n for n in graph.nodes if n.op == "BatchNormalization"]:
        x = bn.inputs[0]
        if len(x.inputs) != 1 or len(x.outputs) != 1 or id(x) in outputs or len(bn.outputs) != 1:
            continue
        layer = x.inputs[0]
        params = bn.inputs[1:5]
        axis = _output_channel_axis(layer)
        if axis is None or not all(isinstance(p, gs.Constant) for p in [layer.inputs[1], *params]):
            continue
        if len(layer.inputs) > 2 and not (isinstance(layer.inputs[2], gs.Constant) and layer.inputs[2].values.ndim == 1):
            continue
        gamma, beta, mean, var = (np.asarray(p.values, np.float64) for p in params)
        factor = gamma / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
        weight = np.asarray(layer.inputs[1].values)
        channels = weight.shape[axis]
        bias = np.asarray(layer.inputs[2].values, np.float64) if len(layer.inputs) > 2 else np.zeros(channels)
        if factor.size != channels or bias.size != channels:
            continue
        shape = [1] * weight.ndim
        shape[axis] = channels
        new_weight = weight.astype(np.float64) * factor.reshape(shape)
        new_bias = (bias - mean) * factor + beta
        weight_name = layer.inputs[1].name
        layer.inputs[1] = gs.Constant(model.unique_name(f"{weight_name}_bn"), new_weight.astype(weight.dtype))
        bias_const = gs.Constant(model.unique_name(f"{weight_name}_bn_bias"), new_bias.astype(weight.dtype))
        if len(layer.inputs) > 2:
            layer.inputs[2] = bias_const
        else:
            layer.inputs.append(bias_const)
        layer.outputs = list(bn.outputs)
        bn.outputs.clear()
        folded += 1
    if folded:
        model.cleanup()
    return folded


def _output_channel_axis(layer: gs.Node) -> int | None:
    """The weight axis of a layer's output channels, or None for layers a BatchNorm cannot fold into."""
    if layer.op == "Conv":
        return 0
    if layer.op == "ConvTranspose" and layer.attrs.get("group", 1) == 1:
        return 1
    if layer.op == "Gemm" and not layer.attrs.get("transA", 0) and layer.attrs.get("alpha", 1.0) == 1.0 \
            and layer.attrs.get("beta", 1.0) == 1.0:
        return 0 if layer.attrs.get("transB", 0) else 1
    return None
