"""The prune pass on the zoo: digits (accuracy, BN folded or not, analysis), ResNet-18 and MobileNetV2 (structure, cost)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner

import effc
from effc.calib import CalibrationData
from effc.cli import cli
from effc.ir import load_model
from effc.ir.metrics import model_stats
from effc.onnx_runtime import ort_session
from effc.pipeline import Pipeline
from effc.zoo import get


def digits_accuracy(model) -> float:
    data = np.load(get("digits").eval_path)
    logits = ort_session(model).run(None, {"input": data["input"]})[0]
    return float(np.mean(logits.argmax(axis=1) == data["labels"]))


def digits_context() -> effc.Context:
    return effc.Context(calibration=CalibrationData.load(get("digits").calib_path))


def prune_digits(spec, model=None):
    model = model or load_model(get("digits").onnx_path)
    return effc.optimize(model, spec, digits_context())


@pytest.fixture(scope="module")
def digits_base_accuracy():
    return digits_accuracy(load_model(get("digits").onnx_path))


def test_digits_at_30_percent_loses_at_most_one_point_with_reconstruction(digits_base_accuracy):
    result = prune_digits("prune(ratio=0.3)")
    stats = result.ledger.rows[-1].pass_stats
    assert stats["macs_after"] < 0.6 * stats["macs_before"]
    assert digits_accuracy(result.model) >= digits_base_accuracy - 0.01


def test_digits_at_50_percent_reconstruction_recovers_most_of_the_loss(digits_base_accuracy):
    plain = digits_accuracy(prune_digits("prune(ratio=0.5,reconstruct=false)").model)
    refit = digits_accuracy(prune_digits("prune(ratio=0.5)").model)
    assert plain < digits_base_accuracy - 0.05  # pruning alone hurts ...
    assert refit - plain >= 0.5 * (digits_base_accuracy - plain)  # ... and the refit wins back at least half


def folded_digits(tmp_path):
    """digits with BatchNorm folded into Conv (ONNX Runtime's basic optimizations, saved)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "folded.onnx")
    ort.InferenceSession(str(get("digits").onnx_path), options, providers=["CPUExecutionProvider"])
    proto = onnx.load(tmp_path / "folded.onnx")
    keep = [o for o in proto.opset_import if o.domain in ("", "ai.onnx")]  # ORT lists every domain it knows
    del proto.opset_import[:]
    proto.opset_import.extend(keep)
    return load_model(proto)


def test_digits_with_batchnorm_folded(tmp_path, digits_base_accuracy):
    model = folded_digits(tmp_path)
    assert not any(n.op == "BatchNormalization" for n in model.graph.nodes)
    ctx = digits_context()
    result = effc.optimize(model, "prune(ratio=0.3,criterion=bn_gamma,scope=uniform)", ctx)
    assert result.ledger.rows[-1].pass_stats["groups_pruned"] == 3
    assert any("no BatchNorm" in w for w in ctx.warnings)
    assert digits_accuracy(result.model) >= digits_base_accuracy - 0.02


def test_analysis_reports_an_allocation_and_changes_nothing():
    model = load_model(get("digits").onnx_path)
    before = model.to_proto().graph.SerializeToString()
    result = prune_digits("prune(analyze=true,target_macs=0.5)", model)
    assert not result.ledger.rows[-1].changed
    assert result.model.to_proto().graph.SerializeToString() == before
    report = result.context.reports["prune"]
    assert len(report["groups"]) == 3 and all(set(g["drift"]) == {"0.25", "0.5", "0.75"} for g in report["groups"])
    assert all(g["drift"]["0.75"] >= g["drift"]["0.25"] for g in report["groups"])
    assert report["predicted_macs_reduction"] >= 0.5
    applied = prune_digits(report["spec"].replace(")", ",reconstruct=false)"))
    stats = applied.ledger.rows[-1].pass_stats
    assert abs((1 - stats["macs_after"] / stats["macs_before"]) - report["predicted_macs_reduction"]) < 1e-9


@pytest.mark.zoo
@pytest.mark.parametrize("name, groups, macs_below", [("resnet18", 12, 0.3), ("mobilenetv2", 25, 0.32)])
def test_imagenet_models_shrink_as_predicted_and_run(name, groups, macs_below):
    zoo = get(name)
    model = load_model(zoo.onnx_path)
    base = model_stats(model)
    result = effc.optimize(model, Pipeline.parse("prune(ratio=0.5,reconstruct=false)"), effc.Context())
    stats = result.ledger.rows[-1].pass_stats
    assert stats["groups_pruned"] == groups
    after = model_stats(result.model)
    assert after.macs == stats["macs_predicted"] < macs_below * base.macs
    assert after.params == stats["params_predicted"] < 0.5 * base.params
    assert after.file_bytes < 0.5 * base.file_bytes
    for node in result.model.graph.nodes:  # every kept count is a multiple of 8 (except the 3 input channels)
        if node.op == "Conv":
            assert node.inputs[1].shape[0] % 8 == 0
    x = np.load(zoo.eval_path)["input"][:1]
    logits = ort_session(result.model).run(None, {"input": x})[0]
    assert logits.shape == (1, 1000) and np.all(np.isfinite(logits))


def test_command_line_prunes_and_refuses_reconstruction_without_data(tmp_path):
    model = str(get("digits").onnx_path)
    refused = CliRunner().invoke(cli, ["optimize", model, "-o", str(tmp_path / "a.onnx"), "--passes", "prune(ratio=0.5)"])
    assert refused.exit_code == 2 and "needs calibration data for reconstruct=true" in refused.output
    done = CliRunner().invoke(cli, ["optimize", model, "-o", str(tmp_path / "b.onnx"), "--json",
                                    "--passes", "prune(ratio=0.5,reconstruct=false)"])
    assert done.exit_code == 0, done.output
    pruned = load_model(tmp_path / "b.onnx")
    assert model_stats(pruned).macs < 0.3 * model_stats(load_model(model)).macs
