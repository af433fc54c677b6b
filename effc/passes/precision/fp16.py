"""fp16: run a model's compute in half precision, with the numerically sensitive ops kept in float32.

Converted are the ops on `HALF_OPS` (convolutions, matmuls, elementwise arithmetic and activations, pooling, data
movement): their float inputs are read in float16 (constants stored as float16, other tensors through a Cast) and
their float outputs are float16. Everything else stays float32, on purpose or because it is not known to be safe:
Softmax, LayerNormalization and every reduction (their sums overflow or lose the small terms in 11 bits of
mantissa), Exp/Log/Pow/Sqrt/Erf, ops with subgraphs, and whatever `keep` names. Graph inputs and outputs keep
float32, so the model's interface does not change; Casts sit only where a float16 tensor meets a float32 op.

ONNX Runtime's CPU provider runs float16 models (slowly: it casts internally); GPUs run them on tensor cores.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from effc.errors import EffcError
from effc.ir import Model
from effc.pipeline import Pass, PassResult, register_pass

HALF_OPS = frozenset({
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "PRelu", "Sigmoid",
    "Tanh", "HardSigmoid", "HardSwish", "Gelu", "Clip", "Max", "Min", "Neg", "Abs", "MaxPool", "AveragePool",
    "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization", "Concat", "Reshape", "Flatten", "Transpose",
    "Squeeze", "Unsqueeze", "Slice", "Split", "Gather", "Pad", "Resize", "Identity", "Expand", "Tile",
    "DepthToSpace", "SpaceToDepth", "Where",
})
# inputs that must stay float32 even when the op runs in half (Resize's roi and scales) or are not data at all
DATA_INPUTS = {"Resize": (0,), "Pad": (0, 2), "Slice": (0,), "Reshape": (0,), "Gather": (0,), "Expand": (0,),
               "Tile": (0,), "Squeeze": (0,), "Unsqueeze": (0,), "Split": (0,), "Where": (1, 2)}
FLOAT16_MAX = float(np.finfo(np.float16).max)


@register_pass
class Float16(Pass):
    """Compute in float16 where it is safe: convs, matmuls, elementwise ops; reductions, softmax and norms stay float32.

    Constants read by converted ops are stored as float16 (a constant too large for float16 keeps its op in float32),
    inputs and outputs stay float32. `keep` names nodes or op types to leave in float32 as well."""

    name = "fp16"
    kind = "lossy"

    @dataclass
    class Options:
        keep: tuple[str, ...] = field(default=(), metadata={"help": "node names or op types kept in float32"})

    def run(self, model: Model, ctx) -> PassResult:
        if ctx.target is not None and "float16" not in ctx.target.isa.float_types:
            raise EffcError(f"target {ctx.target.name} has no float16 compute ({', '.join(ctx.target.isa.float_types)}); "
                            "drop fp16 or pick a target that has it")
        keep = set(self.options.keep)
        converted = _convert(model, lambda node: node.op in HALF_OPS and node.op not in keep and node.name not in keep
                             and _constants_fit(node))
        if converted:
            model.cleanup()
        total = sum(1 for n in model.graph.nodes if n.op not in ("Cast",))
        return PassResult(converted > 0, {"half_nodes": converted, "float_nodes": total - converted},
                          {"half_nodes": converted, "kept_float32": sorted({n.op for n in model.graph.nodes
                                                                          if n.op not in HALF_OPS | {"Cast"}})})


def _constants_fit(node: gs.Node) -> bool:
    for index in _data_inputs(node):
        tensor = node.inputs[index]
        if isinstance(tensor, gs.Constant) and _is_float32(tensor):
            values = np.asarray(tensor.values)
            if values.size and float(np.max(np.abs(values))) > FLOAT16_MAX:
                return False
    return True


def _data_inputs(node: gs.Node) -> list[int]:
    indices = DATA_INPUTS.get(node.op, range(len(node.inputs)))
    return [i for i in indices if i < len(node.inputs) and node.inputs[i].name]


def _is_float32(tensor: gs.Tensor) -> bool:
    return tensor.dtype is not None and np.dtype(tensor.dtype) == np.float32


def _captured_by_subgraphs(graph: gs.Graph) -> set[str]:
    """Names of the tensors that subgraphs (If/Loop/Scan bodies, nested) read from outside themselves."""
    captured: set[str] = set()
    for node in graph.nodes:
        for value in node.attrs.values():
            if isinstance(value, gs.Graph):
                inner = {t.name for n in value.nodes for t in n.outputs} | {t.name for t in value.inputs}
                captured |= {t.name for n in value.nodes for t in n.inputs if t.name and t.name not in inner}
                captured |= {t.name for t in value.outputs if t.name not in inner}
                captured |= _captured_by_subgraphs(value)
    return captured


def _convert(model: Model, converts) -> int:
    """Rewrite the graph in place so that nodes for which `converts(node)` holds compute in float16."""
    graph = model.graph
    half: dict[str, gs.Tensor] = {}  # float32 tensor name -> its float16 version
    full: dict[str, gs.Tensor] = {}  # float16 tensor name -> its float32 version
    halved: set[str] = set()  # names of tensors now float16 (outputs of converted nodes)
    added: list[gs.Node] = []
    count = 0

    def cast(tensor: gs.Tensor, dtype, cache: dict) -> gs.Tensor:
        if tensor.name not in cache:
            if isinstance(tensor, gs.Constant):
                cache[tensor.name] = gs.Constant(model.unique_name(f"{tensor.name}_fp16"),
                                                 np.asarray(tensor.values).astype(dtype))
            else:
                out = gs.Variable(model.unique_name(f"{tensor.name}/{np.dtype(dtype).name}"), dtype, tensor.shape)
                to = 10 if dtype == np.float16 else 1  # TensorProto.FLOAT16 / FLOAT
                added.append(gs.Node("Cast", model.unique_name(f"{tensor.name}/cast"), attrs={"to": to},
                                     inputs=[tensor], outputs=[out]))
                cache[tensor.name] = out
        return cache[tensor.name]

    captured = _captured_by_subgraphs(graph)
    for node in list(graph.nodes):
        if any(isinstance(value, gs.Graph) for value in node.attrs.values()):
            converting = False  # If/Loop/Scan bodies stay as they are, and so do their nodes' inputs
        else:  # and so do the producers of tensors a body reads from the enclosing graph
            converting = converts(node) and not any(t.name in captured for t in node.outputs)
        if converting:
            data = _data_inputs(node)
            for index, tensor in enumerate(node.inputs):
                if index not in data:
                    if tensor.name in halved:  # a float32-only input (Resize's scales) computed in half upstream
                        node.inputs[index] = cast(tensor, np.float32, full)
                elif tensor.name not in halved and _is_float32(tensor):
                    node.inputs[index] = cast(tensor, np.float16, half)
            for tensor in node.outputs:
                if _is_float32(tensor):
                    tensor.dtype = np.float16
                    halved.add(tensor.name)
            count += 1
        else:
            for index, tensor in enumerate(node.inputs):
                if tensor.name in halved:
                    node.inputs[index] = cast(tensor, np.float32, full)
    for index, tensor in enumerate(graph.outputs):
        if tensor.name in halved:  # the interface stays float32, under the output's own name
            name = tensor.name
            tensor.name = model.unique_name(f"{name}/fp16")
            out = gs.Variable(name, np.float32, tensor.shape)
            added.append(gs.Node("Cast", model.unique_name(f"{name}/cast"), attrs={"to": 1}, inputs=[tensor], outputs=[out]))
            graph.outputs[index] = out
    graph.nodes.extend(added)
    return count
