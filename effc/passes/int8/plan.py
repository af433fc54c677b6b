"""Which nodes int8 quantizes and which activation tensors get a QuantizeLinear/DequantizeLinear pair.

Placement follows what ONNX Runtime's QDQ fusion needs to turn a node into an integer kernel: every float
input of the node and its output pass through Q/DQ; a Relu or Clip that is the sole consumer is absorbed (the
pair goes after it, ORT drops the activation into the quantization range); MaxPool and reshaping ops reuse
their input's scale so ORT can drop their Q/DQ; MatMul/Gemm outputs stay float unless a quantized node reads
them (ORT then runs MatMulIntegerToFloat / QGemm with a float output).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from effc.ir import Model

WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
ELEMENTWISE = ("Add",)
OTHER_QUANTIZED = ("Concat", "AveragePool", "GlobalAveragePool", "MaxPool")
ABSORBED = ("Relu", "Clip")
PASSTHROUGH = ("MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze")
FLOAT_OUTPUT_OK = ("Gemm", "MatMul")  # ORT fuses them with a float output
TABLE_CONSUMERS = ("Gather", "Slice")  # ops that read rows of a constant table (embeddings): the table is stored int8
TABLE_MIN_ELEMENTS = 1024


@dataclass
class QuantPlan:
    """nodes: quantized node names in graph order; weighted: those whose weight (input 1) is quantized;
    tensors: activation tensor name -> the tensor whose range it uses (itself, or a passthrough's input);
    layer_outputs: quantized node name -> the tensor that carries its result (after an absorbed Relu/Clip)."""

    nodes: list[str] = field(default_factory=list)
    weighted: list[str] = field(default_factory=list)
    tensors: dict[str, str] = field(default_factory=dict)
    tables: list[str] = field(default_factory=list)  # Gather/Slice nodes whose constant table is stored int8
    layer_outputs: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # node name -> why it stays float

    @property
    def calibrated(self) -> list[str]:
        return sorted(set(self.tensors))


def _is_float(t: gs.Tensor) -> bool:
    return t.dtype is not None and np.dtype(t.dtype) == np.float32


def _activation(t: gs.Tensor) -> bool:
    return isinstance(t, gs.Variable) and _is_float(t)


def eligibility(node: gs.Node) -> str | None:
    """None when `node` can be quantized, else why not."""
    op = node.op
    if op in ("Conv", "ConvTranspose"):
        if not _activation(node.inputs[0]) or not isinstance(node.inputs[1], gs.Constant):
            return "weight is not a constant"
        if len(node.inputs) > 2 and not isinstance(node.inputs[2], gs.Constant):
            return "bias is not a constant"
        return None
    if op == "Gemm":
        if node.attrs.get("transA", 0) or node.attrs.get("alpha", 1.0) != 1.0 or node.attrs.get("beta", 1.0) != 1.0:
            return "Gemm with transA/alpha/beta"
        if not _activation(node.inputs[0]) or not isinstance(node.inputs[1], gs.Constant):
            return "weight is not a constant"
        if len(node.inputs) > 2 and (not isinstance(node.inputs[2], gs.Constant) or node.inputs[2].values.ndim != 1):
            return "bias is not a 1-D constant"
        return None
    if op == "MatMul":
        a, b = node.inputs[:2]
        if isinstance(b, gs.Constant) and b.values.ndim == 2 and _activation(a):
            return None
        if _activation(a) and _activation(b):
            return None
        return "inputs are not float activations or a 2-D constant weight"
    if op in TABLE_CONSUMERS:
        return None
    if op in ELEMENTWISE:
        return None if all(_activation(t) for t in node.inputs) else "an input is a constant"
    if op in OTHER_QUANTIZED:
        inputs = node.inputs if op == "Concat" else node.inputs[:1]
        return None if all(_activation(t) for t in inputs) else "an input is not a float activation"
    return "not a quantizable op"


def _data_inputs(node: gs.Node) -> list[gs.Tensor]:
    if node.op in WEIGHTED and isinstance(node.inputs[1], gs.Constant):
        return [node.inputs[0]]
    if node.op in ("Concat", "Add", "MatMul"):
        return list(node.inputs)
    return [node.inputs[0]]


def _absorbing_activation(tensor: gs.Tensor, graph_outputs: set[int]) -> gs.Node | None:
    if id(tensor) in graph_outputs or len(tensor.outputs) != 1:
        return None
    consumer = tensor.outputs[0]
    if consumer.op == "Relu" or (consumer.op == "Clip" and all(isinstance(t, gs.Constant) for t in consumer.inputs[1:] if t.name)):
        return consumer
    return None


def plan_quantization(model: Model, exclude: set[str] = frozenset(), keep_float: set[str] = frozenset()) -> QuantPlan:
    """The plan for `model`; nodes named (or whose op type is) in `exclude`, and names in `keep_float`, stay float."""
    graph = model.graph
    graph_outputs = {id(t) for t in graph.outputs}
    plan = QuantPlan()
    candidates = []
    for node in graph.nodes:
        if node.op not in (*WEIGHTED, *ELEMENTWISE, *OTHER_QUANTIZED) and not _reads_table(node):
            continue
        if node.name in exclude or node.op in exclude:
            plan.skipped[node.name] = "excluded by the user"
            continue
        if node.name in keep_float:
            plan.skipped[node.name] = "kept in float (accuracy budget)"
            continue
        reason = eligibility(node)
        if reason:
            plan.skipped[node.name] = reason
            continue
        candidates.append(node)
    quantized_ids = {id(n) for n in candidates}
    needed: list[gs.Tensor] = []
    for node in candidates:
        if node.op == "MaxPool" and not _quantized_input(node, needed, candidates):
            plan.skipped[node.name] = "input is not quantized"
            continue
        plan.nodes.append(node.name)
        if node.op in TABLE_CONSUMERS:
            plan.tables.append(node.name)
            plan.layer_outputs[node.name] = node.outputs[0].name
            continue
        if node.op in WEIGHTED and isinstance(node.inputs[1], gs.Constant):
            plan.weighted.append(node.name)
        needed.extend(_data_inputs(node))
        out = node.outputs[0]
        activation = _absorbing_activation(out, graph_outputs)
        if activation is not None:
            out = activation.outputs[0]
        plan.layer_outputs[node.name] = out.name
        read_by_quantized = any(id(c) in quantized_ids for c in out.outputs)
        if node.op not in FLOAT_OUTPUT_OK or read_by_quantized or activation is not None:
            needed.append(out)
    _assign_owners(plan, needed)
    return plan


def _reads_table(node: gs.Node) -> bool:
    if node.op not in TABLE_CONSUMERS or not node.inputs:
        return False
    table = node.inputs[0]
    return (isinstance(table, gs.Constant) and table.values.dtype == np.float32 and table.values.size >= TABLE_MIN_ELEMENTS
            and all(c.op in TABLE_CONSUMERS for c in table.outputs))


def _quantized_input(node: gs.Node, needed: list[gs.Tensor], candidates: list[gs.Node]) -> bool:
    x = node.inputs[0]
    return any(t is x for t in needed) or any(x is n.outputs[0] for n in candidates if n is not node)


def _assign_owners(plan: QuantPlan, needed: list[gs.Tensor]) -> None:
    """Each needed tensor uses its own range unless it is a passthrough op's output whose input is quantized."""
    needed_ids = {id(t) for t in needed}
    owners: dict[int, str] = {}

    def owner(t: gs.Tensor) -> str:
        if id(t) in owners:
            return owners[id(t)]
        result = t.name
        if len(t.inputs) == 1 and t.inputs[0].op in PASSTHROUGH and t.inputs[0].inputs:
            source = t.inputs[0].inputs[0]
            if id(source) in needed_ids and _activation(source):
                result = owner(source)
        owners[id(t)] = result
        return result

    for t in needed:
        if _activation(t):
            plan.tensors[t.name] = owner(t)
