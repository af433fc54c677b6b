"""The int8 pass: calibrate activation ranges, write standard QDQ ONNX that ONNX Runtime fuses into integer kernels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from effc.analysis.calibration_stats import CalibratorName, collect_statistics
from effc.analysis.weights import int8_weight_qmax
from effc.calib import CalibrationData
from effc.errors import EffcError
from effc.ir import Model
from effc.ir.folding import fold_batchnorm, fold_weight_subgraphs
from effc.passes.int8.equalize import equalize
from effc.passes.int8.gptq import GptqRounding, InputMoments, gptq_supported
from effc.passes.int8.measure import integer_kernels, noise_stats, sqnr_db
from effc.passes.int8.plan import QuantPlan, plan_quantization
from effc.passes.int8.qdq import ActivationFormat, write_qdq
from effc.pipeline.pass_base import Pass, PassResult, register_pass
from effc.targets import ISA

RANDOM_CALIBRATION_SAMPLES = 16


def activation_format(isa: ISA, activations: str, symmetric: bool) -> tuple[ActivationFormat, str]:
    """The activation storage the kernels of `isa` want, and why (the target record's `int8_activations`).

    ONNX Runtime on x86 runs u8 x s8 products (VNNI's vpdpbusd, else pmaddubsw); int8 x int8 falls back to
    slower kernels (measured on ResNet-18: 3.16x vs 1.03x over float). ARM's dot-product instructions (sdot) are
    signed x signed, so ARM records ask for int8 activations. effc's TVM backend rewrites the QDQ islands into
    integer kernels of that format (effc/backends/tvm/integer/), so the same choice serves both backends.
    """
    if activations == "auto":
        if symmetric:
            activations, why = "int8", "symmetric activations requested: int8 with zero point 0"
        elif isa.int8_activations == "int8":
            activations, why = "int8", "the target's int8 kernels multiply signed x signed (ARM sdot/smlal)"
        else:
            activations, why = "uint8", "the target's int8 kernels multiply uint8 activations by int8 weights (x86 VNNI, pmaddubsw)"
    else:
        why = f"activations={activations} requested"
    dtype = np.uint8 if activations == "uint8" else np.int8
    return ActivationFormat(dtype, symmetric), why


@register_pass
class Int8(Pass):
    """Quantize to int8 QDQ: per-channel int8 weights, calibrated per-tensor activations, sensitivity report.

    Calibration data comes from the context (refused without it unless random calibration was allowed, with a
    warning). Before quantizing, weights computed from constants only (a clustered weight's decoder) are folded,
    and BatchNormalization after Conv is folded into the Conv. With `equalize=true`, channel groups joined only by
    positively homogeneous ops are rescaled (exact in float; see equalize.py) so one per-tensor activation
    range fits all their channels; off by default: on the zoo models the channel ranges spread at most 2.6x and it
    did not raise output SQNR (ResNet-18 lost 2.4 dB; benchmarks/README.md). Weights of Conv/ConvTranspose/Gemm/MatMul are
    int8 symmetric per output channel (max|w|/127, or the scales in metadata `effc.int8_weight_scale.<name>`;
    max|w|/63 where the target's uint8 x int8 products saturate in 16 bits: x86 without VNNI, see ISA.int8_weight_bits);
    per_channel=false writes one scale repeated per channel. The integers are GPTQ's (rounding=gptq, the
    default; gptq.py): with the scales kept, each layer's weights minimise ||W X - Q X||^2 over its float
    calibration inputs X (input moments gathered in the same streamed calibration run; 2-D Conv including grouped
    and depthwise, Gemm, MatMul; others round to nearest), or the nearest ones (rounding=nearest). gptq is the
    default because it held on every trained model (benchmarks/README.md, bench_trained): the PP-OCRv4
    recogniser -2.7 points with nearest, +0.5 with gptq; the detector -2.8 / +0.9; digits, the direction
    classifier and the glyph classifier equal or better; on random-weight MobileNetV2 it lost 0.1 dB of output
    SQNR, and it about doubles the pass time. Biases
    are int32 with scale input_scale * weight_scale, corrected (bias_correction) for the mean shift the final
    weight error causes. Constant tables read
    by Gather/Slice (embeddings) are stored int8. Activations are per tensor; the type follows the target record's
    ISA (see `activation_format`; ONNX Runtime on this machine when no target is given): uint8 for x86, int8 for arm. The output is
    standard QDQ ONNX for every target; the TVM backend turns its islands into integer kernels.

    Report (ctx.reports["int8"]): per layer its output SQNR in the quantized model, the noise it adds itself
    (local SQNR), its weights' SQNR and, with gptq, how much less output error (on calibration rows, weights
    alone) its rounding leaves than nearest rounding (rounding_gain_db); the rounding used and the layers it
    left to nearest (format); top-1 agreement and output SQNR against float on the calibration
    samples; the integer kernels ONNX Runtime actually runs (and float compute left); layers not quantized, why;
    `equalized`: the groups rescaled (producers, consumers, channel range spread before and after) and why others were not.

    `accuracy_budget` is the largest allowed loss of top-1 agreement with the float model on the calibration
    set (a fraction: 0.01 = one sample in a hundred may change its argmax); calibration data has no labels,
    so agreement stands in for accuracy. The most sensitive layers stay float (the fewest that meet the budget,
    found by bisection). Sensitivity ranks layers by the noise each adds (local SQNR, free), or, with
    `sensitivity=true`, first by the agreement with only that layer quantized (one model run over the
    report samples per layer: expensive on big models, hence an option).
    """

    name = "int8"
    kind = "lossy"
    requires = ("calibration",)

    @dataclass
    class Options:
        calibrator: CalibratorName = field(default="percentile", metadata={"help": "activation range method"})
        per_channel: bool = field(default=True, metadata={"help": "one weight scale per output channel"})
        symmetric_activations: bool = field(default=False, metadata={"help": "int8 activations with zero point 0"})
        activations: Literal["auto", "uint8", "int8"] = field(default="auto", metadata={"help": "activation type; auto picks the fast one for the target"})
        exclude: tuple[str, ...] = field(default=(), metadata={"help": "node names or op types to keep in float"})
        accuracy_budget: float | None = field(default=None, metadata={"help": "max top-1 agreement loss vs float on calibration data"})
        bias_correction: bool = field(default=True, metadata={"help": "compensate the mean shift weight rounding causes"})
        rounding: Literal["nearest", "gptq"] = field(default="gptq", metadata={"help": "weight rounding: nearest, or GPTQ least squares on calibration inputs"})
        equalize: bool = field(default=False, metadata={"help": "rescale channel groups so one per-tensor activation range fits all their channels"})
        equalize_alpha: float = field(default=0.5, metadata={"help": "equalization strength: s_c = (range_c / weight_range_c) ** alpha"})
        sensitivity: bool = field(default=False, metadata={"help": "measure end-to-end drift with each layer alone quantized"})
        samples: int | None = field(default=None, metadata={"help": "use at most this many calibration samples"})
        report_samples: int = field(default=64, metadata={"help": "samples for the SQNR report and the accuracy budget"})

        def validate(self):
            if self.accuracy_budget is not None and not 0.0 <= self.accuracy_budget < 1.0:
                raise ValueError("accuracy_budget must be a fraction in [0, 1)")
            if self.samples is not None and self.samples < 1:
                raise ValueError("samples must be at least 1")
            if self.report_samples < 1:
                raise ValueError("report_samples must be at least 1")
            if not 0.0 <= self.equalize_alpha <= 1.0:
                raise ValueError("equalize_alpha must be in [0, 1]")
            if self.symmetric_activations and self.activations == "uint8":
                raise ValueError("symmetric activations are int8; drop activations=uint8")

    def check_model(self, model: Model) -> None:
        model.check_node_refs(self.options.exclude, "option exclude")

    def run(self, model: Model, ctx) -> PassResult:
        opts = self.options
        model.check_node_refs(opts.exclude, "option exclude")  # again: earlier passes may have renamed nodes
        specs = model.input_specs()
        calibration = ctx.calibration
        if calibration is None:
            if not ctx.allow_random_calibration:
                raise EffcError("pass int8 needs calibration data: give --calib DATA.npz (or a folder of .npy files)")
            ctx.warn("int8: calibrating on random inputs; ranges will not match real data")
            calibration = CalibrationData.random(specs, RANDOM_CALIBRATION_SAMPLES, seed=ctx.seed)
        folded = fold_weight_subgraphs(model) + fold_batchnorm(model)
        plan = plan_quantization(model, set(opts.exclude))
        if not plan.nodes:
            inside = _compute_in_subgraphs(model)
            if inside:
                ctx.warn(f"int8: nothing to quantize in the main graph; {inside} Conv/Gemm/MatMul node(s) sit inside "
                         "If/Loop/Scan bodies, which int8 does not quantize")
            return PassResult(bool(folded), {"folded": folded, "quantized_layers": 0}, {"not_quantized": plan.skipped, "layers": []})
        equalized = {"groups": [], "blocked": {}}
        if opts.equalize:
            with ctx.progress("int8: equalizing", total=None):
                # exact in float (see quant_equalize); calibration below sees the rescaled tensors
                equalized = equalize(model, calibration.batches(specs, limit=opts.samples), opts.equalize_alpha)
            plan = plan_quantization(model, set(opts.exclude))
        isa = ctx.isa()
        fmt, why = activation_format(isa, opts.activations, opts.symmetric_activations)
        qmax = int8_weight_qmax(isa)

        total = calibration.num_samples(specs) if opts.samples is None else min(opts.samples, calibration.num_samples(specs))
        means = {_input_name(model, n) for n in plan.weighted}
        moments, not_gptq = _input_moments(model, plan, total, ctx.rng("int8-gptq")) if opts.rounding == "gptq" else ({}, {})
        observers: dict[str, list] = {}
        for name, moment in moments.items():
            observers.setdefault(_input_name(model, name), []).append(moment)
        with ctx.progress("int8: calibrating", total=None) as bar:
            # streamed: one batch in memory at a time (a folder of .npy files is memory-mapped)
            stats = collect_statistics(model, calibration.batches(specs, limit=opts.samples), plan.calibrated, histogram=opts.calibrator != "minmax",
                                       means=means if opts.bias_correction else set(), observers=observers, progress=bar)
        gptq = GptqRounding(moments) if moments else None
        report_feeds = list(calibration.batches(specs, limit=opts.report_samples))

        def build(keep_float: set[str]) -> tuple[Model, QuantPlan, object]:
            sub = plan if not keep_float else plan_quantization(model, set(opts.exclude), keep_float)
            candidate = model.copy()
            writer = write_qdq(candidate, sub, stats, fmt, opts.calibrator, opts.bias_correction, opts.per_channel, gptq, qmax)
            return candidate, sub, writer

        quantized, current, writer = build(set())
        probe = _probe_names(model, plan)
        reference: dict = {}
        measured = noise_stats(model, quantized, report_feeds, probe, reference)
        layers = _layer_rows(model, plan, measured, writer)
        if opts.sensitivity:
            with ctx.progress("int8: sensitivity", total=len(plan.nodes)) as bar:
                for row in layers:
                    alone = set(plan.nodes) - {row["name"]}
                    single, _, _ = build(alone)
                    one = noise_stats(model, single, report_feeds, [], reference)
                    row["alone_output_sqnr_db"] = _finite(one["output_sqnr"])
                    row["alone_agreement"] = one["agreement"]
                    bar.advance()
        kept: list[str] = []
        agreement = measured["agreement"]
        if opts.accuracy_budget is not None and agreement is not None and 1.0 - agreement > opts.accuracy_budget + 1e-12:
            order = [row["name"] for row in sorted(layers, key=_sensitivity_key)]

            def agreement_keeping(count: int) -> tuple[float, tuple]:
                built = build(set(order[:count]))
                return noise_stats(model, built[0], report_feeds, [], reference)["agreement"], built

            # agreement grows (roughly monotonically) with the number of most-sensitive layers kept: bisect on it
            low, high, best = 0, len(order), None
            while low < high:
                middle = (low + high) // 2
                score, built = agreement_keeping(middle)
                if 1.0 - score <= opts.accuracy_budget + 1e-12:
                    high, best = middle, (score, built)
                else:
                    low = middle + 1
            if best is None:  # only keeping every layer is left to try
                best = agreement_keeping(len(order))
                if 1.0 - best[0] > opts.accuracy_budget + 1e-12:
                    ctx.warn(f"int8: accuracy budget {opts.accuracy_budget} not met even with every layer in float")
            kept = order[:high]
            agreement, (quantized, current, writer) = best
            measured = noise_stats(model, quantized, report_feeds, probe, reference)
            _update_rows(layers, measured, set(kept))
        model.graph = quantized.graph
        kernels = integer_kernels(model)
        report = {
            "target": ctx.target.name if ctx.target is not None else "onnxruntime",
            "format": {"activations": f"{np.dtype(fmt.dtype).name} {'symmetric' if fmt.symmetric else 'asymmetric'} per-tensor",
                       "weights": f"int8 symmetric {'per-channel' if opts.per_channel else 'per-tensor'} in [-{qmax}, {qmax}]",
                       "why": why, "weight_range_why": _weight_range_why(qmax),
                       "rounding": opts.rounding, "rounded_to_nearest": not_gptq},
            "calibrator": opts.calibrator, "calibration_samples": total, "report_samples": _sample_count(report_feeds),
            "top1_agreement": agreement, "output_sqnr_db": _finite(measured["output_sqnr"]),
            "layers": layers, "kept_float": kept,
            "not_quantized": {k: v for k, v in plan.skipped.items()},
            "kernels": kernels, "folded": folded, "int8_tables": writer.tables, "equalized": equalized,
        }
        stats_out = {"quantized_layers": len(current.nodes), "kept_float": len(kept), "equalized_groups": len(equalized["groups"]), "integer_kernels": sum(kernels["integer"].values()),
                     "float_compute_ops": sum(kernels["float"].values()), "top1_agreement": -1.0 if agreement is None else round(agreement, 4)}
        return PassResult(True, stats_out, report)


def _weight_range_why(qmax: int) -> str:
    if qmax == 127:
        return "the target's int8 products do not saturate (VNNI, dot-product instructions, float emulation)"
    return ("the target's uint8 x int8 products add pairs in 16 bits (x86 without VNNI: pmaddubsw), which saturates "
            "unless weights keep to 7 bits")


def _sample_count(feeds: list[dict]) -> int:
    return sum(len(next(iter(f.values()))) if f else 0 for f in feeds)


def _input_name(model: Model, node_name: str) -> str:
    return next(n for n in model.graph.nodes if n.name == node_name).inputs[0].name


def _input_moments(model: Model, plan: QuantPlan, samples: int, rng) -> tuple[dict[str, InputMoments], dict[str, str]]:
    """GPTQ's input-moment collectors for the weighted layers it supports (node name -> collector), and the
    others with why they keep nearest rounding."""
    nodes = {n.name: n for n in model.graph.nodes}
    moments, skipped = {}, {}
    for name in plan.weighted:
        reason = gptq_supported(nodes[name])
        if reason is None:
            moments[name] = InputMoments(nodes[name], samples, rng)
        else:
            skipped[name] = reason
    return moments, skipped


def _probe_names(model: Model, plan: QuantPlan) -> list[str]:
    nodes = {n.name: n for n in model.graph.nodes}
    names = set(plan.layer_outputs.values())
    for name in plan.nodes:
        names |= {t.name for t in nodes[name].inputs if t.name in plan.tensors}
    return sorted(names)


def _finite(value: float) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 2)


def _layer_rows(model: Model, plan: QuantPlan, measured: dict, writer) -> list[dict]:
    """One row per quantized layer: output SQNR in the quantized model, and the noise the layer itself adds
    (local SQNR: output noise-to-signal minus the worst input's; 120 dB means no measurable added noise)."""
    nodes = {n.name: n for n in model.graph.nodes}
    signal, noise = measured["signal"], measured["noise"]
    rows = []
    for name in plan.nodes:
        node = nodes[name]
        out = plan.layer_outputs[name]
        ratio_out = noise[out] / max(signal[out], 1e-30)
        inputs = [t.name for t in node.inputs if t.name in plan.tensors]
        ratio_in = max((noise[i] / max(signal[i], 1e-30) for i in inputs), default=0.0)
        rows.append({
            "name": name, "op": node.op, "output": out,
            "sqnr_db": _finite(sqnr_db(signal[out], noise[out])),
            "local_sqnr_db": _finite(sqnr_db(1.0, max(ratio_out - ratio_in, 1e-12))),
            "weight_sqnr_db": _weight_sqnr(node, plan, writer),
            "rounding_gain_db": _finite(writer.rounding_gain[name]) if name in writer.rounding_gain else None,
            "kept_float": False,
        })
    return rows


def _weight_sqnr(node, plan: QuantPlan, writer) -> float | None:
    if node.name in plan.weighted:
        return _finite(writer.weight_error.get(node.inputs[1].name, float("inf")))
    if node.name in plan.tables:
        return _finite(writer.weight_error.get(node.inputs[0].name, float("inf")))
    return None


def _update_rows(rows: list[dict], measured: dict, kept: set[str]) -> None:
    """After mixed precision: output SQNR in the final model, and which layers stayed float."""
    for row in rows:
        row["kept_float"] = row["name"] in kept
        row["sqnr_db"] = _finite(sqnr_db(measured["signal"][row["output"]], measured["noise"][row["output"]]))


def _sensitivity_key(row: dict) -> tuple:
    """Most sensitive first: lowest agreement when quantized alone (if measured), then least local SQNR."""
    alone = row.get("alone_agreement")
    local = row.get("local_sqnr_db")
    return (alone if alone is not None else 1.0, local if local is not None else float("inf"))


def _compute_in_subgraphs(model: Model) -> int:
    from effc.ir.structure import nodes_with_subgraphs

    return sum(node.op in ("Conv", "Gemm", "MatMul") for node in nodes_with_subgraphs(model.graph)) - \
        sum(node.op in ("Conv", "Gemm", "MatMul") for node in model.graph.nodes)
