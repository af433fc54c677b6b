"""A small corpus through every step a new user takes: inspect, optimize --verify, compile x86, run, compared with
ONNX Runtime. The full corpus (all of the onnx package's light models) is benchmarks/bench_corpus.py."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from effc.cli import cli

LIGHT = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"
DIGITS = Path(__file__).resolve().parents[1] / "effc" / "zoo" / "digits" / "digits.onnx"
# digits (the zoo's own), SqueezeNet (opset 3 upgraded, Dropout, Concat) and ShuffleNet (grouped convs, Transpose
# channel shuffles: the layout pass crashed on it)
CORPUS = {"digits": DIGITS, "squeezenet": LIGHT / "light_squeezenet.onnx", "shufflenet": LIGHT / "light_shufflenet.onnx"}


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.tvm
@pytest.mark.parametrize("name", list(CORPUS))
def test_corpus_model_goes_through_every_step(tmp_path, name):
    from effc.artifact import load_artifact
    from effc.ir import load_model
    from effc.onnx_runtime import random_inputs, run_model

    path = CORPUS[name]
    if not path.exists():
        pytest.skip(f"{path} is not installed")
    for args in (["inspect", path, "--no-layers"], ["optimize", path, "-o", tmp_path / "o.onnx", "--verify"],
                 ["compile", path, "-o", tmp_path / "a.effc", "--input-shape", _pinned(path)]):
        result = invoke(*args)
        assert result.exit_code == 0, (args[0], result.output)
    model = load_model(path, {_pinned(path).split("=")[0]: [int(d) for d in _pinned(path).split("=")[1].split(",")]})
    feeds = random_inputs(model.input_specs(), seed=0)
    got = load_artifact(tmp_path / "a.effc")(feeds)
    want = run_model(model, feeds)
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-3, atol=1e-4 * max(1.0, float(np.abs(value).max())))


def _pinned(path: Path) -> str:
    spec = __import__("effc.ir", fromlist=["load_model"]).load_model(path).input_specs()[0]
    return f"{spec.name}=" + ",".join(str(d if isinstance(d, int) else 1) for d in spec.shape)
