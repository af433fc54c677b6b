"""The int8 QDQ model for a TVM target imports and runs on TVM Relax with ORT's numbers."""

from __future__ import annotations

import numpy as np
import pytest

from effc import optimize
from effc.calib import CalibrationData
from effc.ir import load_model
from effc.onnx_runtime import run_model
from effc.pipeline.context import Context
from effc.zoo import get


@pytest.mark.tvm
def test_digits_int8_for_x86_runs_on_tvm_like_on_onnxruntime():
    import tvm
    import tvm.relax.frontend.onnx
    from tvm import relax

    z = get("digits")
    ctx = Context(calibration=CalibrationData.load(z.calib_path), target="x86")
    model = optimize(load_model(z.onnx_path), "int8", ctx).model
    x = np.load(z.eval_path)["input"][:4].astype(np.float32)
    module = relax.frontend.onnx.from_onnx(model.to_proto(), shape_dict={"input": [4, 1, 8, 8]}, keep_params_in_input=False)
    machine = relax.VirtualMachine(tvm.compile(module, target="llvm"), tvm.cpu())
    result = machine["main"](tvm.runtime.tensor(x))
    logits = (result.numpy() if hasattr(result, "numpy") else result[0].numpy())
    expected = run_model(model, {"input": x})["logits"]
    np.testing.assert_allclose(logits, expected, atol=1e-3 * float(np.abs(expected).max()))
    assert ctx.reports["int8"]["target"] == "x86"
