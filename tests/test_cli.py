"""The command line: every core command, --json schemas, exit codes, no partial outputs, a real subprocess run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from effc import Pass, register_pass
from effc.cli import cli
from effc.pipeline.pass_base import unregister_pass


@pytest.fixture
def model_path(tmp_path, tiny_model):
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_model, path)
    return path


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_inspect_json_schema(model_path):
    result = invoke("inspect", model_path, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert set(info) >= {"source", "opset", "inputs", "outputs", "nodes", "op_histogram", "params", "weight_bytes", "file_bytes",
                         "macs", "layers", "tvm_unsupported", "metadata"}
    assert info["inputs"] == [{"name": "x", "shape": ["N", 4], "dtype": "float32"}]
    assert info["op_histogram"] == {"Identity": 1, "MatMul": 1, "Relu": 1}
    assert info["params"] == 12 and info["macs"] == 12
    assert info["layers"] == [{"name": "mm", "op": "MatMul", "macs": 12}]


def test_inspect_table_and_pinned_shape(model_path):
    result = invoke("inspect", model_path, "--input-shape", "x=8,4")
    assert result.exit_code == 0
    assert "MatMul" in result.output and "[8, 4]" in result.output
    assert "96" in result.output  # 8 x 4 x 3 MACs


def test_inspect_names_what_tvm_cannot_import(tmp_path):
    from onnx import helper

    from tests.conftest import FLOAT, make_model

    m = make_model([helper.make_node("Relu", ["x"], ["y"], name="r"),
                    helper.make_node("BiasGelu", ["y", "b"], ["z"], name="ms_gelu", domain="com.microsoft")],
                   [("x", FLOAT, [2])], [("z", FLOAT, [2])], {"b": np.zeros(2, np.float32)})
    m.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    path = tmp_path / "ms.onnx"
    onnx.save(m, path)
    info = json.loads(invoke("inspect", path, "--json").output)
    assert info["tvm_unsupported"] == [{"node": "ms_gelu", "op": "com.microsoft.BiasGelu"}]


def test_passes_lists_registry():
    info = json.loads(invoke("passes", "--json").output)
    names = [p["name"] for p in info["passes"]]
    assert "dce" in names and "default" in info["pipelines"]
    assert all(p["description"] for p in info["passes"])
    assert "dce" in invoke("passes").output


def test_optimize_writes_model_and_report(tmp_path, model_path):
    out, report = tmp_path / "out.onnx", tmp_path / "ledger.json"
    result = invoke("optimize", model_path, "-o", out, "--verify", "--report", report, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["ledger"]["pipeline"] == "default"
    assert document["ledger"]["rows"][0]["step"] == "input"
    assert json.loads(report.read_text()) == document
    saved = onnx.load(out)
    assert {p.key: p.value for p in saved.metadata_props}["effc.pipeline"] == "default"


def test_optimize_table_output(tmp_path, model_path):
    result = invoke("optimize", model_path, "-o", tmp_path / "out.onnx", "--passes", "dce", "--latency", "--drift")
    assert result.exit_code == 0
    assert "pipeline: dce" in result.output and "ORT latency" in result.output and "wrote" in result.output


def test_verify_exit_codes(tmp_path, model_path, tiny_model):
    assert invoke("verify", model_path, model_path).exit_code == 0
    other = onnx.ModelProto()
    other.CopyFrom(tiny_model)
    other.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(np.ones((4, 3), np.float32), "w"))
    onnx.save(other, tmp_path / "other.onnx")
    result = CliRunner().invoke(cli, ["verify", str(model_path), str(tmp_path / "other.onnx"), "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["within_tolerance"] is False
    assert "check failed" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["inspect", "missing.onnx"], "no such file"),
    (["optimize", "MODEL", "-o", "OUT", "--passes", "nope"], "unknown pass 'nope'"),
    (["optimize", "MODEL", "-o", "OUT", "--passes", "dce", "--recipe", "r.toml"], "not both"),
    (["optimize", "MODEL", "-o", "OUT", "--calib", "missing.npz"], "no such calibration"),
    (["inspect", "MODEL", "--input-shape", "x"], "expected NAME=D0,D1"),
    (["inspect", "MODEL", "--input-shape", "y=1,4"], "no input named 'y'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, model_path, args, message):
    args = [str(model_path) if a == "MODEL" else str(tmp_path / "out.onnx") if a == "OUT" else a for a in args]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]
    assert "Traceback" not in result.output
    assert not (tmp_path / "out.onnx").exists()


def test_internal_error_is_exit_3_with_reproducer_and_no_output(tmp_path, model_path):
    class Explodes(Pass):
        """Always fails."""

        name = "toy-explodes"

        def run(self, model, ctx):
            raise RuntimeError("boom")

    register_pass(Explodes)
    try:
        out = tmp_path / "out.onnx"
        result = CliRunner().invoke(cli, ["optimize", str(model_path), "-o", str(out), "--passes", "dce,toy-explodes"])
        assert result.exit_code == 3
        line = result.stderr.strip()
        assert line.startswith("internal error:") and "toy-explodes" in line and "--debug" in line and "\n" not in line
        where = Path(line.split("a reproducer is in ")[1].split(", rm -r it when done")[0].rstrip(")"))
        assert (where / "tiny.onnx").exists() and "toy-explodes" in (where / "pipeline.txt").read_text()
        shutil.rmtree(where)
        assert not out.exists() and not list(tmp_path.glob(".out.onnx*"))
        debug = CliRunner().invoke(cli, ["--debug", "optimize", str(model_path), "-o", str(out), "--passes", "toy-explodes"])
        assert debug.exit_code == 3 and "Traceback" in debug.stderr
    finally:
        unregister_pass("toy-explodes")


def test_installed_command_runs_as_a_subprocess(tmp_path, model_path):
    exe = shutil.which("effc") or [sys.executable, "-m", "effc.cli"]
    cmd = [exe] if isinstance(exe, str) else exe
    ok = subprocess.run([*cmd, "optimize", str(model_path), "-o", str(tmp_path / "o.onnx"), "--json"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["output"] == str(tmp_path / "o.onnx")
    bad = subprocess.run([*cmd, "inspect", str(tmp_path / "nope.onnx")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == f"error: {tmp_path / 'nope.onnx'}: no such file"
