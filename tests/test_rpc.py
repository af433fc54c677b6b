"""`effc run --rpc` against a TVM RPC server started on loopback (as a board would run it)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

import effc
from effc.artifact import load_artifact
from effc.cli import cli
from effc.runtime import ort_session, run_session
from models.zoo import get


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def rpc_server():
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port),
                               "--port-end", str(port + 1)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.3)
    else:
        server.kill()
        pytest.fail("the TVM RPC server did not start")
    yield f"127.0.0.1:{port}"
    server.terminate()
    server.wait(10)


@pytest.fixture(scope="module")
def digits_x86(tmp_path_factory):
    out = tmp_path_factory.mktemp("rpc") / "digits.x86.effc"
    result = CliRunner().invoke(cli, ["compile", str(get("digits").onnx_path), "--target", "x86", "--passes", "dce",
                                      "--input-shape", "input=1,1,8,8", "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.tvm
def test_run_over_rpc_matches_onnx_runtime(rpc_server, digits_x86, tmp_path):
    x = np.load(get("digits").eval_path)["input"][:1].astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = CliRunner().invoke(cli, ["run", str(digits_x86), "--rpc", rpc_server, "--input", f"input={tmp_path / 'x.npy'}",
                                      "--output-dir", str(tmp_path), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["where"] == f"rpc://{rpc_server}"
    expected = run_session(ort_session(str(get("digits").onnx_path)), {"input": x})["logits"]
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), expected, atol=1e-4)


@pytest.mark.tvm
def test_profile_over_rpc_reports_end_to_end_only(rpc_server, digits_x86):
    result = CliRunner().invoke(cli, ["profile", str(digits_x86), "--rpc", rpc_server, "--repeat", "3", "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    profile = json.loads(result.output)
    assert profile["latency"]["repeats"] == 3 and profile["latency"]["median_ms"] > 0 and profile["kernels"] == []


@pytest.mark.parametrize("address, message", [("nowhere", "expected HOST:PORT"), ("127.0.0.1:1", "cannot reach the TVM RPC server")])
def test_bad_rpc_address_is_refused(digits_x86, address, message):
    with pytest.raises(effc.EffcError, match=message):
        load_artifact(digits_x86, rpc=address)
