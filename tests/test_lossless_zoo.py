"""The default lossless pipeline on every zoo model: verified on ORT, fewer nodes, same top-1, dynamic dims kept."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import effc
from effc.ir import load_model
from effc.onnx_runtime import random_inputs, run_model
from effc.pipeline.context import Context
from effc.zoo import get
from tests.conftest import zoo_params

LOSSLESS = ["fold-constants", "remove-identity", "dedup-initializers", "cse", "fold-bn", "fold-pad", "fold-scale", "fuse", "dce",
            "strip-names"]
# node counts onnxslim 0.1.x reaches on these models (benchmarks/bench_simplify.py measures them afresh)
ONNXSLIM_NODES = {"digits": 12, "resnet18": 49, "mobilenetv2": 100, "encoder": 121, "ds_cnn": 21}


def _check_close(before: dict, after: dict) -> None:
    for name, ref in before.items():
        scale = max(float(np.abs(ref).max()), 1e-6)
        assert float(np.abs(after[name] - ref).max()) <= 1e-4 * scale, name
        if ref.ndim == 2:
            assert np.array_equal(ref.argmax(-1), after[name].argmax(-1))


@pytest.mark.parametrize("name", zoo_params())
def test_default_pipeline_on_zoo(name):
    model = load_model(get(name).onnx_path)
    sizes = (1, 3) if name == "encoder" else (1,)
    feeds = [random_inputs(model.input_specs(), seed=s, dim_value=s * 4 + 1) for s in sizes]
    before = [run_model(model, f) for f in feeds]
    result = effc.optimize(model.copy(), "default", Context(verify=True))
    assert len(result.model.graph.nodes) <= ONNXSLIM_NODES[name] < len(model.graph.nodes)
    assert [s.shape for s in result.model.input_specs()] == [s.shape for s in model.input_specs()]
    for f, ref in zip(feeds, before):  # encoder: two sequence lengths and batch sizes
        _check_close(ref, run_model(result.model, f))


@functools.cache
def _loaded(name: str):
    """(model, feeds, outputs) of a zoo model, loaded once for all passes."""
    model = load_model(get(name).onnx_path)
    feeds = random_inputs(model.input_specs(), seed=2, dim_value=5)
    return model, feeds, run_model(model, feeds)


@pytest.mark.parametrize("name", zoo_params())
@pytest.mark.parametrize("step", LOSSLESS)
def test_each_pass_alone_keeps_outputs_on_every_zoo_model(step, name):
    model, feeds, ref = _loaded(name)
    result = effc.optimize(model.copy(), step, Context(verify=True))
    _check_close(ref, run_model(result.model, feeds))


def test_digits_accuracy_unchanged():
    zoo = get("digits")
    model = load_model(zoo.onnx_path)
    data = np.load(zoo.eval_path)
    optimized = effc.optimize(model.copy(), "default", Context()).model
    ref = run_model(model, {"input": data["input"]})["logits"].argmax(-1)
    got = run_model(optimized, {"input": data["input"]})["logits"].argmax(-1)
    assert np.array_equal(ref, got) and (got == data["labels"]).mean() > 0.9
