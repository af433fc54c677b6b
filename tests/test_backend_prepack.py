"""Schedules that pre-pack weights lift a `main_transform_params` function: the runner calls it once on the params."""

from __future__ import annotations

import numpy as np
import pytest

import effc.backends.tvm_schedules as schedules
from effc.artifact import compile_artifact, load_artifact
from effc.backends.targets import get_target
from effc.ir import load_model
from effc.runtime import run_model
from models.zoo import get


@pytest.mark.tvm
def test_lifted_weight_transform_runs_once_before_main(tmp_path, monkeypatch):
    import tvm
    from tvm import relax

    generic = schedules.relax_pipeline
    monkeypatch.setattr(schedules, "relax_pipeline", lambda target, tuning_db=None: tvm.transform.Sequential(
        [relax.transform.LiftTransformParams(), generic(target, tuning_db=tuning_db)]))
    model = load_model(get("digits").onnx_path, {"input": [1, 1, 8, 8]})
    compile_artifact(model, get_target("x86"), tmp_path / "a.effc")
    artifact = load_artifact(tmp_path / "a.effc")
    vm = artifact.runner.vm
    assert vm._has("main_transform_params")
    raw = len(np.load(tmp_path / "a.effc" / "params.npz").files)
    assert len(vm.params) != raw or any(p.shape != q.shape for p, q in zip(vm.params, np.load(tmp_path / "a.effc" / "params.npz").values()))
    x = np.load(get("digits").eval_path)["input"][:2][:1].astype(np.float32)
    np.testing.assert_allclose(artifact(input=x)["logits"], run_model(model, {"input": x})["logits"], atol=1e-4)
