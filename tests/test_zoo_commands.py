"""Every core command on every zoo model, and import -> save -> ONNX Runtime round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from effc import CalibrationData, load_model
from effc.cli import cli
from effc.onnx_runtime import ort_session, run_session
from effc.zoo import get
from tests.conftest import zoo_params


@pytest.fixture(scope="module", params=zoo_params())
def zoo(request):
    return get(request.param)


def test_round_trip_keeps_outputs(tmp_path, zoo):
    model = load_model(zoo.onnx_path)
    model.save(tmp_path / "again.onnx")
    specs = model.input_specs()
    feeds = next(CalibrationData.load(zoo.calib_path).batches(specs, limit=2))
    original = run_session(ort_session(str(zoo.onnx_path)), feeds)
    again = run_session(ort_session(str(tmp_path / "again.onnx")), feeds)
    assert original.keys() == again.keys()
    for name in original:
        # import folds shape arithmetic, so ORT may fuse differently: equal up to float rounding
        scale = float(np.max(np.abs(original[name])))
        np.testing.assert_allclose(again[name], original[name], rtol=0, atol=1e-5 * max(scale, 1.0))


def test_inspect_every_zoo_model(zoo):
    result = CliRunner().invoke(cli, ["inspect", str(zoo.onnx_path), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["macs"] > 0 and info["params"] > 0
    assert info["tvm_unsupported"] == []
    assert sum(layer["macs"] for layer in info["layers"]) == info["macs"]


def test_optimize_and_verify_every_zoo_model(tmp_path, zoo):
    out = tmp_path / f"{zoo.name}.opt.onnx"
    result = CliRunner().invoke(cli, ["optimize", str(zoo.onnx_path), "-o", str(out), "--verify", "--calib", str(zoo.calib_path), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["ledger"]["rows"]
    assert rows[-1]["nodes"] <= rows[0]["nodes"]
    verify = CliRunner().invoke(cli, ["verify", str(zoo.onnx_path), str(out), "--inputs", str(zoo.calib_path), "--samples", "2", "--json"])
    assert verify.exit_code == 0, verify.output
    assert json.loads(verify.output)["within_tolerance"] is True
