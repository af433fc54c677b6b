"""`effc run --rpc` against a TVM RPC server started on loopback (as a board would run it)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
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
from effc.onnx_runtime import ort_session, run_session
from effc.zoo import get


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(command: list[str], port: int | None):
    """Starts `command` in its own process group, so stopping it also stops the worker processes the server forks.
    With a `port`, waits until something listens there. A server registered with a tracker gets None: a probing
    connection that closes at once makes TVM's server drop and redo its tracker registration, and a client asking the
    tracker in between finds no server."""
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    if port is None:
        return server
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.3)
    else:
        stop_server(server)
        pytest.fail("the TVM RPC server did not start")
    return server


def stop_server(server: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)


@pytest.fixture(scope="module")
def rpc_server():
    port = free_port()
    server = start_server([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1", "--port", str(port),
                           "--port-end", str(port + 1)], port)
    yield f"127.0.0.1:{port}"
    stop_server(server)


def compile_digits(folder, target):
    out = folder / f"digits.{target}.effc"
    result = CliRunner().invoke(cli, ["compile", str(get("digits").onnx_path), "--target", target, "--passes", "dce",
                                      "--input-shape", "input=1,1,8,8", "-o", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def digits_x86(tmp_path_factory):
    return compile_digits(tmp_path_factory.mktemp("rpc"), "x86")


def digits_sample():
    return np.load(get("digits").eval_path)["input"][:1].astype(np.float32)


def digits_reference(x):
    return run_session(ort_session(str(get("digits").onnx_path)), {"input": x})["logits"]


@pytest.mark.tvm
def test_run_over_rpc_matches_onnx_runtime(rpc_server, digits_x86, tmp_path):
    x = digits_sample()
    np.save(tmp_path / "x.npy", x)
    result = CliRunner().invoke(cli, ["run", str(digits_x86), "--rpc", rpc_server, "--input", f"input={tmp_path / 'x.npy'}",
                                      "--output-dir", str(tmp_path), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["where"] == f"rpc://{rpc_server}"
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), digits_reference(x), atol=1e-4)


@pytest.mark.tvm
def test_profile_over_rpc_reports_end_to_end_only(rpc_server, digits_x86):
    result = CliRunner().invoke(cli, ["profile", str(digits_x86), "--rpc", rpc_server, "--repeat", "3", "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    profile = json.loads(result.output)
    assert profile["latency"]["repeats"] == 3 and profile["latency"]["median_ms"] > 0 and profile["kernels"] == []


@pytest.mark.tvm
@pytest.mark.parametrize("address, message", [("nowhere", "expected HOST:PORT"), ("127.0.0.1:1", "cannot reach the TVM RPC server")])
def test_bad_rpc_address_is_refused(digits_x86, address, message):
    with pytest.raises(effc.EffcError, match=message):
        load_artifact(digits_x86, rpc=address)


@pytest.mark.tvm
@pytest.mark.slow
def test_arm_artifact_over_rpc_to_an_emulated_aarch64_server(tmp_path):
    from effc.runners.qemu_aarch64 import rpc_server_command

    artifact = compile_digits(tmp_path, "arm")
    port = free_port()
    server = start_server(rpc_server_command("127.0.0.1", port), port)
    try:
        x = digits_sample()
        outputs = load_artifact(artifact, rpc=f"127.0.0.1:{port}")(input=x)
        np.testing.assert_allclose(outputs["logits"], digits_reference(x), atol=1e-4)
    finally:
        stop_server(server)
