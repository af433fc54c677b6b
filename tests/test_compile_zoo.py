"""Every zoo model compiles for x86 and arm; x86 runs here and arm under qemu, both matching ONNX Runtime;
the profile of a real model has one row per kernel adding up to the end-to-end time.

Each model is compiled once per target for the whole module (TVM compiles are slow on a shared 2-core machine).
The arm runs need `bash scripts/setup_arm_runtime.sh` (scripts/test.sh runs it).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import effc
from effc.cli import cli
from effc.onnx_runtime import compare_outputs, ort_session, random_inputs, run_session
from effc.zoo import get
from tests.conftest import zoo_params

SHAPES = {"digits": "input=1,1,8,8", "resnet18": "input=1,3,224,224", "mobilenetv2": "input=1,3,224,224",
          "encoder": "input_ids=1,16"}
MODELS = zoo_params(tuple(SHAPES))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """(model, target) -> artifact folder, compiled lazily through `effc compile`, at most once each."""
    folder = tmp_path_factory.mktemp("zoo-artifacts")
    cache = {}

    def artifact(name: str, target: str):
        if (name, target) not in cache:
            out = folder / f"{name}.{target}.effc"
            result = CliRunner().invoke(cli, ["compile", str(get(name).onnx_path), "--target", target, "--input-shape",
                                              SHAPES[name], "-o", str(out), "--json"], catch_exceptions=False)
            assert result.exit_code == 0, result.output
            cache[name, target] = out
        return cache[name, target]

    return artifact


def feeds_for(name: str, folder) -> dict[str, np.ndarray]:
    """A real sample where the zoo has one, random inputs of the artifact's shapes otherwise."""
    meta = json.loads((folder / "effc.json").read_text())
    (spec,) = meta["inputs"]
    samples = np.load(get(name).eval_path)
    if spec["name"] in samples.files:
        return {spec["name"]: samples[spec["name"]][:1].astype(spec["dtype"])}
    specs = [effc.TensorSpec(spec["name"], tuple(spec["shape"]), np.dtype(spec["dtype"]))]
    return random_inputs(specs, seed=1)


def assert_matches_ort(name, folder):
    feeds = feeds_for(name, folder)
    reference = run_session(ort_session(str(get(name).onnx_path)), feeds)
    outputs = effc.load_artifact(folder)(feeds)
    drift = compare_outputs([reference], [outputs])
    assert drift.max_abs <= 1e-4 * max(1.0, drift.scale), drift  # tolerance scales with output magnitude
    assert drift.top1_agreement is None or drift.top1_agreement == 1.0, drift


@pytest.mark.tvm
@pytest.mark.parametrize("name", MODELS)
def test_x86_artifact_matches_onnx_runtime(compiled, name):
    assert_matches_ort(name, compiled(name, "x86"))


@pytest.mark.tvm
@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_arm_artifact_matches_onnx_runtime_under_qemu(compiled, name):
    folder = compiled(name, "arm")
    assert (folder / "model.so").read_bytes()[18:20] == (183).to_bytes(2, "little")  # ELF e_machine = EM_AARCH64
    assert effc.load_artifact(folder).runner.emulated
    assert_matches_ort(name, folder)


@pytest.mark.tvm
@pytest.mark.zoo
def test_profile_has_one_row_per_kernel_adding_up_to_end_to_end(compiled, tmp_path):
    folder = compiled("mobilenetv2", "x86")
    html = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["profile", str(folder), "--repeat", "10", "--warmup", "1", "--json", "--html", str(html),
                                      "--compare-ort", str(get("mobilenetv2").onnx_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    profile = json.loads(result.output)
    names = [row["name"] for row in profile["kernels"]]
    assert len(names) == len(set(names)) > 10 and not any(n.startswith("vm.builtin") for n in names)
    # the kernels and builtins of each instrumented run are timed inside that run: they cover most of it, never more
    assert 0.5 <= profile["kernel_coverage"] <= 1.0, profile["kernel_coverage"]
    convs = [row for row in profile["kernels"] if "conv2d" in row["name"]]
    assert convs and all(row["onnx_nodes"] and row["gflops"] > 0 for row in convs)  # mapped back to ONNX Conv nodes
    assert profile["ort_latency"]["median_ms"] > 0 and profile["ort_max_abs_diff"] < 1e-3
    assert profile["weight_bytes"] > 10e6 and profile["peak_activation_bytes"] > 1e6 and not profile["emulated"]
    page = html.read_text()
    assert "<svg" in page and names[0] in page and "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")


@pytest.mark.tvm
@pytest.mark.slow
def test_profile_under_qemu_is_labelled_emulated(compiled):
    result = CliRunner().invoke(cli, ["profile", str(compiled("digits", "arm")), "--repeat", "3", "--warmup", "1"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "emulated" in result.output and "qemu" in result.output and "conv2d" in result.output
