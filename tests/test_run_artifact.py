"""Artifacts of the digits model: layout, effc run / effc.load_artifact, ORT target, and every refusal."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

import effc
from effc.cli import cli
from effc.onnx_runtime import ort_session, run_session
from effc.zoo import get

DIGITS = str(get("digits").onnx_path)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """The digits model compiled for x86 and ort through the CLI, once for this module."""
    folder = tmp_path_factory.mktemp("digits")
    for target in ("x86", "ort", "arm"):
        result = invoke("compile", DIGITS, "--target", target, "--input-shape", "input=1,1,8,8", "-o", folder / f"d.{target}.effc")
        assert result.exit_code == 0, result.output
    return folder


@pytest.fixture
def sample():
    return np.load(get("digits").eval_path)["input"][:1].astype(np.float32)


def reference(x):
    return run_session(ort_session(DIGITS), {"input": x})["logits"]


@pytest.mark.tvm
def test_artifact_is_self_describing(artifacts):
    folder = artifacts / "d.x86.effc"
    assert sorted(p.name for p in folder.iterdir()) == ["effc.json", "model.so", "params.npz"]
    meta = json.loads((folder / "effc.json").read_text())
    assert meta["inputs"] == [{"name": "input", "shape": [1, 1, 8, 8], "dtype": "float32"}]
    assert meta["outputs"][0]["name"] == "logits" and meta["outputs"][0]["shape"] == [1, 10]
    assert meta["target"]["name"] == "x86" and meta["target"]["tvm"]["kind"] == "llvm"
    assert meta["pipeline"] == "default" and meta["ledger"]["rows"]
    assert len(meta["source"]["sha256"]) == 64 and meta["versions"]["apache-tvm"].startswith("0.27")
    assert set(meta["files"]) == {"model.so", "params.npz"}
    assert not [p for p in artifacts.iterdir() if p.name.startswith(".")]  # no temporary folders left behind


@pytest.mark.tvm
@pytest.mark.parametrize("target", ["x86", "ort"])
def test_load_artifact_matches_onnx_runtime(artifacts, sample, target):
    outputs = effc.load_artifact(artifacts / f"d.{target}.effc")(input=sample)
    np.testing.assert_allclose(outputs["logits"], reference(sample), atol=1e-4 * max(1.0, np.abs(reference(sample)).max()))


@pytest.mark.tvm
def test_effc_run_writes_one_npy_per_output(artifacts, sample, tmp_path):
    np.save(tmp_path / "x.npy", sample)
    result = invoke("run", artifacts / "d.x86.effc", "--input", f"input={tmp_path / 'x.npy'}", "--output-dir", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["outputs"][0]["file"].endswith("logits.npy")
    np.testing.assert_allclose(np.load(tmp_path / "out" / "logits.npy"), reference(sample), atol=1e-4)


def test_compile_default_output_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("compile", DIGITS, "--target", "ort", "--input-shape", "input=1,1,8,8", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["artifact"] == "digits.ort.effc" and (tmp_path / "digits.ort.effc" / "effc.json").is_file()


def copy_of(artifacts, tmp_path, name="d.x86.effc"):
    return shutil.copytree(artifacts / name, tmp_path / name)


@pytest.mark.parametrize("feeds, message", [
    ({}, "missing input 'input'"),
    ({"input": np.zeros((2, 1, 8, 8), np.float32)}, r"shape \[2, 1, 8, 8\]; the artifact was compiled for \[1, 1, 8, 8\]"),
    ({"input": np.zeros((1, 1, 8, 8), np.float64)}, "dtype float64; the artifact takes float32"),
    ({"input": np.zeros((1, 1, 8, 8), np.float32), "other": np.zeros(1)}, "unknown input 'other'"),
])
@pytest.mark.tvm
def test_bad_inputs_are_refused(artifacts, feeds, message):
    with pytest.raises(effc.EffcError, match=message):
        effc.load_artifact(artifacts / "d.x86.effc")(feeds)


@pytest.mark.tvm
def test_corrupted_library_is_refused(artifacts, tmp_path):
    folder = copy_of(artifacts, tmp_path)
    data = bytearray((folder / "model.so").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "model.so").write_bytes(bytes(data))
    with pytest.raises(effc.EffcError, match="corrupted: model.so does not match its checksum"):
        effc.load_artifact(folder)


@pytest.mark.tvm
def test_missing_params_and_broken_json_are_refused(artifacts, tmp_path):
    folder = copy_of(artifacts, tmp_path)
    (folder / "params.npz").unlink()
    with pytest.raises(effc.EffcError, match="corrupted: params.npz is missing"):
        effc.load_artifact(folder)
    (folder / "effc.json").write_text("{not json")
    with pytest.raises(effc.EffcError, match="effc.json is corrupted"):
        effc.load_artifact(folder)


def test_foreign_folders_are_refused(tmp_path):
    with pytest.raises(effc.EffcError, match="has no effc.json"):
        effc.load_artifact(tmp_path)
    (tmp_path / "effc.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(effc.EffcError, match="not an effc artifact"):
        effc.load_artifact(tmp_path)
    with pytest.raises(effc.EffcError, match="not a folder"):
        effc.load_artifact(tmp_path / "missing")


@pytest.mark.parametrize("change, message", [
    ({"arch": "riscv64"}, "compiled for riscv64 .*but this machine is x86_64"),
    ({"isa": {"features": ["no_such_feature"]}}, "CPU with no_such_feature, which this machine's CPU lacks"),
])
@pytest.mark.tvm
def test_artifact_for_another_machine_is_refused(artifacts, tmp_path, change, message):
    folder = copy_of(artifacts, tmp_path)
    meta = json.loads((folder / "effc.json").read_text())
    for key, value in change.items():
        if isinstance(value, dict):
            meta["target"][key].update({k: [*meta["target"][key][k], *v] for k, v in value.items()})
        else:
            meta["target"][key] = value
    (folder / "effc.json").write_text(json.dumps(meta))
    with pytest.raises(effc.EffcError, match=message):
        effc.load_artifact(folder)


@pytest.mark.tvm
def test_cli_errors_are_one_line_exit_2(artifacts, tmp_path):
    np.save(tmp_path / "wide.npy", np.zeros((1, 1, 9, 9), np.float32))
    cases = [
        (["run", artifacts / "d.x86.effc", "--input", f"input={tmp_path / 'wide.npy'}"], "has shape [1, 1, 9, 9]"),
        (["run", artifacts / "d.x86.effc", "--input", "input"], "expected NAME=FILE.npy"),
        (["run", artifacts / "d.x86.effc", "--input", f"input={tmp_path / 'nope.npy'}"], "does not exist"),
        (["run", tmp_path], "has no effc.json"),
        (["compile", DIGITS, "--target", "x86"], "dynamic shape"),
        (["compile", DIGITS, "--target", "arm", "--cpu", "pentium", "--input-shape", "input=1,1,8,8"], "unknown --cpu"),
        (["run", artifacts / "d.ort.effc", "--rpc", "127.0.0.1:1"], "--rpc runs TVM artifacts"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(cli, [str(a) for a in args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_ort_target_keeps_dynamic_dims(tmp_path):
    result = invoke("compile", DIGITS, "--target", "ort", "-o", tmp_path / "dyn.effc")
    assert result.exit_code == 0, result.output
    batch = np.load(get("digits").eval_path)["input"][:5].astype(np.float32)
    np.testing.assert_allclose(effc.load_artifact(tmp_path / "dyn.effc")(input=batch)["logits"], reference(batch), atol=1e-4)


@pytest.mark.tvm
def test_arm_artifact_without_the_emulated_runtime_says_how_to_install_it(artifacts, tmp_path, monkeypatch):
    monkeypatch.setenv("EFFC_ARM_RUNTIME", str(tmp_path / "nothing-here"))
    with pytest.raises(effc.EffcError, match="run `bash scripts/setup_arm_runtime.sh` once"):
        effc.load_artifact(artifacts / "d.arm.effc")


def test_compile_names_unimportable_nodes_before_any_work(tmp_path):
    import onnx
    from onnx import helper

    from tests.conftest import FLOAT, make_model

    onnx.save(make_model([helper.make_node("Celu", ["x"], ["y"], name="odd_activation")],
                         [("x", FLOAT, [1, 4])], [("y", FLOAT, [1, 4])]), tmp_path / "celu.onnx")
    result = CliRunner().invoke(cli, ["compile", str(tmp_path / "celu.onnx"), "--target", "arm", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "odd_activation (Celu)" in result.output, result.output
    assert not (tmp_path / "out").exists()
    assert invoke("compile", tmp_path / "celu.onnx", "--target", "ort", "-o", tmp_path / "ok").exit_code == 0
