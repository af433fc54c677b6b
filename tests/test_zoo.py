"""The model zoo: every model is valid ONNX, runs on ONNX Runtime with its data, and builds deterministically."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import cache

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import numpy_helper

from effc import zoo
from tests.conftest import zoo_params


@cache
def session(name: str) -> onnxruntime.InferenceSession:
    so = onnxruntime.SessionOptions()
    so.log_severity_level = 3
    return onnxruntime.InferenceSession(str(zoo.get(name).onnx_path), so, providers=["CPUExecutionProvider"])


def run_per_sample(name: str, samples: np.ndarray) -> np.ndarray:
    """Outputs of a batch-1 model, one sample at a time, stacked."""
    return np.concatenate([session(name).run(None, {"input": sample[None]})[0] for sample in samples])


@pytest.mark.parametrize("name", zoo_params())
def test_model_is_valid_onnx_opset17_with_unique_node_names(name):
    model = zoo.get(name)
    onnx.checker.check_model(str(model.onnx_path), full_check=True)
    proto = onnx.load(str(model.onnx_path))
    assert {o.domain: o.version for o in proto.opset_import}[""] == 17
    names = [node.name for node in proto.graph.node]
    assert all(names) and len(set(names)) == len(names)
    assert model.has_labels == (name in ("digits", "ds_cnn"))


@pytest.mark.parametrize("name", zoo_params())
def test_model_runs_on_its_calibration_and_eval_data(name):
    model = zoo.get(name)
    sess = session(name)
    input_name = sess.get_inputs()[0].name
    for path in (model.calib_path, model.eval_path):
        samples = np.load(path)[input_name]
        assert samples.shape[0] >= 32
        batch = samples[:1] if name in ("resnet18", "mobilenetv2") else samples[:4]
        (out,) = sess.run(None, {input_name: batch})
        assert out.shape[0] == batch.shape[0] and np.isfinite(out).all()


def test_digits_accuracy_from_shipped_files():
    model = zoo.get("digits")
    test = np.load(model.eval_path)
    assert test["input"].shape == (360, 1, 8, 8) and test["input"].dtype == np.float32
    assert test["labels"].shape == (360,) and test["labels"].dtype == np.int64
    assert np.load(model.calib_path)["input"].shape == (200, 1, 8, 8)
    (logits,) = session("digits").run(None, {"input": test["input"]})
    assert logits.shape == (360, 10)
    assert (logits.argmax(1) == test["labels"]).mean() >= 0.97


def test_digits_needs_no_torch():
    code = "import sys; from effc import zoo; zoo.get('digits'); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))


@pytest.mark.parametrize("name", zoo_params(["resnet18", "mobilenetv2"]))
def test_image_classifier_top1_varies_across_eval_images(name):
    samples = np.load(zoo.get(name).eval_path)["input"]
    assert samples.shape == (32, 3, 224, 224) and samples.dtype == np.float32
    logits = run_per_sample(name, samples[:16])
    assert logits.shape == (16, 1000)
    assert len(set(logits.argmax(1).tolist())) >= 3


@pytest.mark.zoo
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("seq", [16, 32])
def test_encoder_runs_at_dynamic_batch_and_sequence_length(batch, seq):
    ids = np.random.default_rng(0).integers(0, 1000, size=(batch, seq), dtype=np.int64)
    (hidden,) = session("encoder").run(None, {"input_ids": ids})
    assert hidden.shape == (batch, seq, 128) and np.isfinite(hidden).all()


@pytest.mark.zoo
def test_encoder_graph_shows_attention_and_exact_gelu():
    ops = {node.op_type for node in onnx.load(str(zoo.get("encoder").onnx_path)).graph.node}
    assert {"MatMul", "Softmax", "Erf", "LayerNormalization", "Gather"} <= ops


def _initializers(path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


@pytest.mark.zoo
@pytest.mark.parametrize("name", ["encoder", "mobilenetv2"])
def test_building_twice_is_deterministic(name, tmp_path):
    from effc.zoo.build import build_model

    first, second = (zoo.model_files(name, tmp_path / run) for run in ("a", "b"))
    build_model(name, first)
    build_model(name, second)
    for path_a, path_b in ((first.calib_path, second.calib_path), (first.eval_path, second.eval_path)):
        a, b = np.load(path_a), np.load(path_b)
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
    weights_a, weights_b = _initializers(first.onnx_path), _initializers(second.onnx_path)
    assert weights_a.keys() == weights_b.keys()
    assert all(np.array_equal(weights_a[k], weights_b[k]) for k in weights_a)


@pytest.mark.zoo
def test_concurrent_first_use_builds_once_and_both_callers_get_the_model(tmp_path):
    code = "from effc import zoo; print(zoo.get('encoder').onnx_path)"
    env = {**os.environ, "EFFC_ZOO_CACHE": str(tmp_path)}
    root = os.path.dirname(os.path.dirname(__file__))
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, cwd=root, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [proc.communicate(timeout=120)[0].strip() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert outputs[0] == outputs[1] == str(tmp_path / "encoder" / "encoder.onnx")
    assert sorted(p.name for p in (tmp_path / "encoder").iterdir() if not p.name.startswith(".")) == [
        "encoder.onnx", "encoder_calib.npz", "encoder_eval.npz"]


def test_unknown_name_is_rejected():
    with pytest.raises(ValueError, match="unknown zoo model"):
        zoo.get("alexnet")
