"""Weights are re-laid out at compile time: the artifact stores them in the kernels' layout and loads with no work."""

from __future__ import annotations

import numpy as np
import pytest

from effc.artifact import compile_artifact, load_artifact
from effc.ir import load_model
from effc.onnx_runtime import run_model
from effc.targets import get_target
from effc.zoo import get


@pytest.mark.tvm
def test_conv_weights_are_stored_packed_and_no_transform_runs_at_load(tmp_path):
    model = load_model(get("digits").onnx_path, {"input": [1, 1, 8, 8]})
    compile_artifact(model, get_target("x86"), tmp_path / "a.effc")
    with np.load(tmp_path / "a.effc" / "params.npz") as stored:
        shapes = [stored[name].shape for name in stored.files]
    # OIHW conv weights of the blocked convs became [O/bo, I/bi, KH, KW, bi, bo], channel blocks innermost; the first
    # conv reads the 1-channel NCHW image and writes blocks: [O/bo, I, KH, KW, bo]
    blocked = [s for s in shapes if len(s) == 6]
    first = [s for s in shapes if len(s) == 5 and s[2:4] == (3, 3)]
    assert len(blocked) == 2 and all(s[-1] in (8, 16) and s[-2] in (8, 16) and s[2:4] == (3, 3) for s in blocked)
    assert len(first) == 1 and first[0][1] == 1 and first[0][-1] in (8, 16)
    artifact = load_artifact(tmp_path / "a.effc")
    assert not artifact.runner.vm._has("main_transform_params")
    x = np.load(get("digits").eval_path)["input"][:1].astype(np.float32)
    np.testing.assert_allclose(artifact(input=x)["logits"], run_model(model, {"input": x})["logits"], atol=1e-4)
