"""Rewrite a float graph into QDQ form: Q/DQ pairs on activations, int8 weights with per-channel scales, int32 biases."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from effc.analysis.calibration_stats import CalibratorName, RangeCollector
from effc.analysis.weights import WEIGHT_SCALE_KEY, output_axis
from effc.ir import Model
from effc.passes.int8.gptq import GptqRounding
from effc.passes.int8.plan import QuantPlan


@dataclass(frozen=True)
class ActivationFormat:
    """How activations are stored: numpy dtype and whether the zero point is pinned (symmetric)."""

    dtype: type
    symmetric: bool

    @property
    def qmin(self) -> int:
        return int(np.iinfo(self.dtype).min)

    @property
    def qmax(self) -> int:
        return int(np.iinfo(self.dtype).max)

    def params(self, low: float, high: float) -> tuple[np.float32, np.integer]:
        """(scale, zero point) covering [low, high] (which includes 0)."""
        if self.symmetric:
            bound = max(abs(low), abs(high))
            scale = bound / (127.0 if self.dtype == np.int8 else 127.5) if bound > 0 else 1.0
            zero = 0 if self.dtype == np.int8 else 128
        else:
            span = high - low
            scale = span / (self.qmax - self.qmin) if span > 0 else 1.0
            zero = int(np.clip(round(self.qmin - low / scale), self.qmin, self.qmax))
        return np.float32(scale), self.dtype(zero)


def weight_scales(weight: np.ndarray, axis: int, name: str, metadata: dict[str, str], qmax: int = 127) -> np.ndarray:
    """Per-channel symmetric scales: max|w|/qmax, or the scales cluster stored in the metadata for this weight."""
    peak = np.max(np.abs(np.moveaxis(weight, axis, 0)).reshape(weight.shape[axis], -1), axis=1)
    given = metadata.get(WEIGHT_SCALE_KEY + name)
    if given is not None:
        scales = np.asarray(json.loads(given), np.float32)
        # scales chosen for a wider weight range than this target's would clip: then they are not used
        if scales.shape == (weight.shape[axis],) and np.all(scales > 0) and np.all(peak / scales <= qmax + 0.5):
            return scales
    return np.where(peak > 0, peak / float(qmax), 1.0).astype(np.float32)


def quantize_weight(weight: np.ndarray, scales: np.ndarray, axis: int, qmax: int = 127) -> np.ndarray:
    shape = [1] * weight.ndim
    shape[axis] = -1
    return np.clip(np.round(weight / scales.reshape(shape)), -qmax, qmax).astype(np.int8)


def bias_shift(node: gs.Node, weight_error: np.ndarray, input_mean: np.ndarray | None) -> np.ndarray | None:
    """The mean change of each output channel caused by the weight error, given the input's per-channel mean."""
    if input_mean is None:
        return None
    if node.op == "Conv":
        groups = int(node.attrs.get("group", 1))
        per_tap = weight_error.reshape(weight_error.shape[0], weight_error.shape[1], -1).sum(axis=2)  # [Cout, Cin/g]
        if input_mean.shape[0] != per_tap.shape[1] * groups:
            return None
        means = input_mean.reshape(groups, -1)[np.arange(per_tap.shape[0]) // (per_tap.shape[0] // groups)]
        return np.sum(per_tap * means, axis=1)
    if node.op in ("Gemm", "MatMul"):
        matrix = weight_error.T if node.op == "Gemm" and node.attrs.get("transB", 0) else weight_error
        return input_mean @ matrix if input_mean.shape[0] == matrix.shape[0] else None
    return None


class QDQWriter:
    """Applies a QuantPlan to a model: one instance per rewrite (it caches the constants it creates)."""

    def __init__(self, model: Model, fmt: ActivationFormat, ranges: dict[str, tuple[float, float]], per_channel: bool = True,
                 gptq: GptqRounding | None = None, weight_qmax: int = 127):
        self.model, self.fmt, self.ranges, self.per_channel = model, fmt, ranges, per_channel
        self.weight_qmax = weight_qmax  # 63 for kernels whose uint8 x int8 products saturate (see analysis.weights)
        self.gptq = gptq  # rounds the weights of the layers it covers (the others: nearest)
        self._params: dict[str, tuple[gs.Constant, gs.Constant]] = {}
        self.weight_error: dict[str, float] = {}  # weight name -> SQNR of its int8 form, dB
        self.rounding_gain: dict[str, float] = {}  # node name -> output error of nearest over GPTQ rounding, dB
        self.tables = 0

    def activation_params(self, owner: str) -> tuple[gs.Constant, gs.Constant]:
        if owner not in self._params:
            scale, zero = self.fmt.params(*self.ranges[owner])
            safe = owner.replace("/", "_").strip("_")
            self._params[owner] = (gs.Constant(self.model.unique_name(f"{safe}_scale"), np.array(scale, np.float32)),
                                   gs.Constant(self.model.unique_name(f"{safe}_zp"), np.array(zero, self.fmt.dtype)))
        return self._params[owner]

    def quantize_activation(self, tensor: gs.Variable, owner: str, params: tuple[gs.Constant, gs.Constant] | None = None) -> None:
        """Insert Q -> DQ on `tensor`; the DQ output keeps the tensor's name (graph outputs stay as they are)."""
        graph, model = self.model.graph, self.model
        scale, zero = params or self.activation_params(owner)
        quantized = gs.Variable(model.unique_name(f"{tensor.name}_q"), zero.values.dtype, tensor.shape)
        if any(tensor is t for t in graph.inputs):
            source, result = tensor, gs.Variable(model.unique_name(f"{tensor.name}_dq"), tensor.dtype, tensor.shape)
            for consumer in list(tensor.outputs):
                _replace(consumer.inputs, tensor, result)
        else:
            source, result = gs.Variable(model.unique_name(f"{tensor.name}_f"), tensor.dtype, tensor.shape), tensor
            producer = tensor.inputs[0]
            _replace(producer.outputs, tensor, source)
        graph.nodes.append(gs.Node("QuantizeLinear", model.unique_name(f"{tensor.name}/Q"), inputs=[source, scale, zero], outputs=[quantized]))
        graph.nodes.append(gs.Node("DequantizeLinear", model.unique_name(f"{tensor.name}/DQ"), inputs=[quantized, scale, zero], outputs=[result]))

    def quantize_weighted(self, node: gs.Node, input_scale: float | None, input_mean: np.ndarray | None, correct_bias: bool) -> None:
        """Weight -> int8 (per channel) + DQ; bias -> int32 with scale input_scale * weight_scale + DQ."""
        model = self.model
        weight = node.inputs[1]
        values = np.asarray(weight.values, np.float32)
        axis = output_axis(node) if values.ndim > 1 else 0
        scales = weight_scales(values, axis, weight.name, model.metadata, self.weight_qmax)
        if not self.per_channel:  # one scale for the whole tensor, still written per channel (all equal)
            scales = np.full_like(scales, scales.max())
        if self.gptq is not None and self.gptq.covers(node):
            q, self.rounding_gain[node.name] = self.gptq.quantize(node, values, scales, self.weight_qmax)
        else:
            q = quantize_weight(values, scales, axis, self.weight_qmax)
        shape = [1] * values.ndim
        shape[axis] = -1
        error = q.astype(np.float32) * scales.reshape(shape) - values
        self.weight_error[weight.name] = _sqnr(values, error)
        node.inputs[1] = self._dequantize(q, scales, axis, weight.name, values.shape, zero_point=node.op not in ("Conv", "ConvTranspose"))
        if node.op == "MatMul" or input_scale is None:
            return
        channels = values.shape[axis] * (int(node.attrs.get("group", 1)) if node.op == "ConvTranspose" else 1)
        if len(node.inputs) > 2 and node.inputs[2].name:
            bias = np.asarray(node.inputs[2].values, np.float64)
            bias_name = node.inputs[2].name
        else:
            bias, bias_name = np.zeros(channels), f"{node.name}/bias"
        if correct_bias:
            shift = bias_shift(node, error.astype(np.float64), input_mean)
            if shift is not None:
                bias = bias - shift
        if bias.shape != (channels,) or scales.shape != (channels,):
            if len(node.inputs) > 2:
                node.inputs[2] = gs.Constant(model.unique_name(bias_name), bias.astype(np.float32))
            return
        bias_scales = (np.float64(input_scale) * scales.astype(np.float64)).astype(np.float32)
        q_bias = np.clip(np.round(bias / bias_scales), -(2**31) + 1, 2**31 - 1).astype(np.int32)
        dq = self._dequantize(q_bias, bias_scales, 0, bias_name, bias.shape, zero_point=False)
        if len(node.inputs) > 2:
            node.inputs[2] = dq
        else:
            node.inputs.append(dq)

    def _dequantize(self, q: np.ndarray, scales: np.ndarray, axis: int, name: str, shape, zero_point: bool = True) -> gs.Variable:
        model = self.model
        safe = name.replace("/", "_").strip("_")
        out = gs.Variable(model.unique_name(f"{safe}_dq"), np.float32, list(shape))
        inputs = [gs.Constant(model.unique_name(f"{safe}_q"), q), gs.Constant(model.unique_name(f"{safe}_scale"), scales)]
        if zero_point:
            # omitted zero points are 0; biases (4 bytes a channel) and Conv weights go without, ORT's Gemm fusion wants one
            inputs.append(gs.Constant(model.unique_name(f"{safe}_zp"), np.zeros(scales.shape, q.dtype)))
        model.graph.nodes.append(gs.Node("DequantizeLinear", model.unique_name(f"{safe}/DQ"), attrs={"axis": axis},
                                         inputs=inputs, outputs=[out]))
        return out


def quantize_tables(model: Model, writer: "QDQWriter", names: list[str]) -> int:
    """Store large constant tables read by Gather/Slice as int8 (per-tensor symmetric) behind a DequantizeLinear.

    A Gather output gets a Q/DQ pair with the table's own scale, so ONNX Runtime gathers int8 rows and the
    pair adds no error. Returns how many tables were quantized.
    """
    count = 0
    wanted = set(names)
    for node in [n for n in model.graph.nodes if n.name in wanted]:
        table = node.inputs[0]
        if not isinstance(table, gs.Constant):  # shared with a node quantized before
            continue
        values = np.asarray(table.values, np.float32)
        peak = float(np.max(np.abs(values)))
        scale = np.array(peak / 127.0 if peak > 0 else 1.0, np.float32)
        q = np.clip(np.round(values / scale), -127, 127).astype(np.int8)
        writer.weight_error[table.name] = _sqnr(values, q.astype(np.float32) * scale - values)
        dequantized = writer._dequantize(q, scale, 0, table.name, values.shape)
        for consumer in list(table.outputs):
            _replace(consumer.inputs, table, dequantized)
        count += 1
        if node.op == "Gather" and len(node.outputs[0].outputs) > 0:
            zero = gs.Constant(model.unique_name(f"{table.name}_zp_int8"), np.array(0, np.int8))
            params = (gs.Constant(model.unique_name(f"{table.name}_scale_int8"), scale), zero)
            writer.quantize_activation(node.outputs[0], table.name, params)
    return count


def _replace(tensors: list, old: gs.Tensor, new: gs.Tensor) -> None:
    for i, t in enumerate(list(tensors)):
        if t is old:
            tensors[i] = new


def _sqnr(signal: np.ndarray, noise: np.ndarray) -> float:
    s, n = float(np.sum(np.square(signal, dtype=np.float64))), float(np.sum(np.square(noise, dtype=np.float64)))
    return float("inf") if n == 0 else 10.0 * np.log10(max(s, 1e-30) / n)


def write_qdq(model: Model, plan: QuantPlan, stats: dict[str, RangeCollector], fmt: ActivationFormat,
              method: CalibratorName, correct_bias: bool, per_channel: bool = True,
              gptq: GptqRounding | None = None, weight_qmax: int = 127) -> QDQWriter:
    """Rewrite `model` (in place) into QDQ form following `plan`, with activation ranges from `stats`;
    the weights of the layers `gptq` covers are rounded by it, the others to nearest."""
    levels = {name: 255 if c.min >= 0 and not fmt.symmetric else 128 for name, c in stats.items()}
    ranges = {owner: stats[owner].range(method, levels[owner]) for owner in set(plan.tensors.values())}
    writer = QDQWriter(model, fmt, ranges, per_channel, gptq, weight_qmax)
    tensors = model.graph.tensors()
    nodes = {n.name: n for n in model.graph.nodes}
    for name in plan.weighted:
        node = nodes[name]
        x = node.inputs[0].name
        scale = writer.activation_params(plan.tensors[x])[0].values if x in plan.tensors else None
        axis = "channel" if node.op in ("Conv", "ConvTranspose") else "last"
        mean = stats[x].mean(axis) if x in stats else None
        writer.quantize_weighted(node, None if scale is None else float(scale), mean, correct_bias)
    for name, owner in plan.tensors.items():
        writer.quantize_activation(tensors[name], owner)
    writer.tables = quantize_tables(model, writer, plan.tables)
    model.cleanup()
    return writer
