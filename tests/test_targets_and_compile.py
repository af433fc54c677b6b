"""Targets are records and effc.compile is a library call: a new board is one record, passes read features."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from click.testing import CliRunner

import effc
from effc.cli import cli
from effc.onnx_runtime import run_model
from effc.targets import Memory, Target, get_target, register_target, registered_targets, unregister_target
from effc.targets.cpu import host_x86_features, x86_isa
from effc.zoo import get

DIGITS = get("digits")
PIN = {"input": [1, 1, 8, 8]}


@pytest.fixture
def board():
    """A CPU board registered as one record: this machine's x86 core, named and described as a board would be."""
    host = get_target("x86")
    record = Target("test-board", "tvm", "x86_64", lowering="cpu", tvm=host.tvm, cpu=host.cpu,
                    isa=x86_isa(host_x86_features()), memory=Memory(flash_bytes=8 << 20, ram_bytes=2 << 20),
                    description="a test board: this machine's CPU with 8 MiB flash and 2 MiB RAM")
    register_target(record)
    yield record
    unregister_target(record.name)


@pytest.mark.tvm
def test_a_new_board_is_one_record_and_compiles_the_digits_model(board, tmp_path):
    artifact = effc.compile(DIGITS.onnx_path, "test-board", input_shapes=PIN, out=tmp_path / "d.effc")
    assert artifact.meta["target"]["name"] == "test-board" and artifact.target == board
    x = np.load(DIGITS.eval_path)["input"][:1]
    np.testing.assert_allclose(artifact(input=x)["logits"], run_model(effc.load_model(DIGITS.onnx_path), {"input": x})["logits"],
                               atol=1e-4)
    listed = json.loads(CliRunner().invoke(cli, ["targets", "--json"]).output)["targets"]
    entry = next(t for t in listed if t["name"] == "test-board")
    assert entry["record"]["memory"] == {"flash_bytes": 8 << 20, "ram_bytes": 2 << 20}


def test_a_board_record_refuses_other_cpus_and_duplicates(board):
    assert get_target("test-board") is board and get_target("test-board", board.cpu) is board
    with pytest.raises(effc.EffcError, match="one board"):
        get_target("test-board", "some-other-cpu")
    with pytest.raises(ValueError, match="already registered"):
        register_target(board)


def test_records_say_what_kernels_may_use():
    arm, a76, n2 = get_target("arm"), get_target("arm", "cortex-a76"), get_target("arm", "neoverse-n2")
    assert arm.isa.vector_bits == 128 and arm.isa.vector_registers == 32 and arm.isa.int8_activations == "int8"
    assert arm.isa.int8_dot == () and a76.isa.int8_dot == ("dotprod",) and n2.isa.int8_dot == ("dotprod", "i8mm")
    assert x86_isa(("avx", "avx2", "fma")).lanes() == 8 and x86_isa(("avx512f", "avx512_vnni")).lanes() == 16
    assert x86_isa(("avx2",)).int8_weight_bits == 7 and x86_isa(("avx2", "avx_vnni")).int8_weight_bits == 8
    assert {"x86", "arm", "ort"} <= set(registered_targets())
    assert Target.from_json(a76.to_json()) == a76


def test_records_of_artifacts_built_before_the_isa_still_load():
    old = {"name": "arm", "backend": "tvm", "arch": "aarch64", "runner": "qemu-aarch64", "tvm": {"kind": "llvm"},
           "cross_compiler": "aarch64-linux-gnu-g++", "device": "cpu", "cpu": "generic", "features": ["+neon"],
           "library_format": "so"}
    record = Target.from_json(old)
    assert record.emulator == "qemu-aarch64" and record.lowering == "cpu" and record.features == ("+neon",)


def test_unknown_x86_cpu_is_refused_with_the_list():
    with pytest.raises(effc.EffcError, match="unknown --cpu 'notacpu' for --target x86"):
        get_target("x86", "notacpu")
    assert get_target("x86", "skylake-avx512").isa.vector_bits == 512


def test_targets_command_lists_every_target():
    result = CliRunner().invoke(cli, ["targets"])
    assert result.exit_code == 0 and all(name in result.output for name in ("x86", "arm", "ort"))
    listed = json.loads(CliRunner().invoke(cli, ["targets", "--json"]).output)["targets"]
    arm = next(t for t in listed if t["name"] == "arm")
    assert "cortex-a76" in arm["cpus"] and arm["record"]["isa"]["vector_bits"] == 128


def test_compile_for_ort_returns_an_artifact_with_its_passes_and_leaves_the_model_alone(tmp_path):
    model = effc.load_model(DIGITS.onnx_path)
    nodes = len(model.graph.nodes)
    ctx = effc.Context(calibration=effc.CalibrationData.load(DIGITS.calib_path))
    artifact = effc.compile(model, "ort", pipeline="default,int8", ctx=ctx, out=tmp_path / "d.ort.effc")
    assert len(model.graph.nodes) == nodes  # compile worked on a copy
    assert artifact.passes.ledger.rows[-1].step == "int8" and ctx.reports["int8"]["target"] == "ort"
    assert artifact.meta["pipeline"] == "default,int8" and artifact.tuning is None
    assert artifact.meta["calibration"] == {"path": str(DIGITS.calib_path.resolve())}
    x = np.load(DIGITS.eval_path)["input"][:2]
    assert artifact(input=x)["logits"].shape == (2, 10)


def test_compile_refuses_before_any_pass_runs(tmp_path):
    class Boom(effc.Pass):
        name = "test-boom"

        def run(self, model, ctx):  # pragma: no cover - must never run
            raise AssertionError("a pass ran")

    with pytest.raises(effc.EffcError, match="dynamic shape"):
        effc.compile(DIGITS.onnx_path, "x86", pipeline=[Boom()], out=tmp_path / "a")
    with pytest.raises(effc.EffcError, match="no tuning database there"):
        effc.compile(DIGITS.onnx_path, "x86", pipeline=[Boom()], input_shapes=PIN, tuning_db=tmp_path / "none",
                     out=tmp_path / "a")
    with pytest.raises(effc.EffcError, match="not compiled by TVM"):
        effc.compile(DIGITS.onnx_path, "ort", pipeline=[Boom()], tune=effc.TuneBudget(trials=4), out=tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_a_lowering_is_found_from_the_record():
    from effc.backends.tvm import get_lowering

    assert get_lowering(get_target("arm")).__name__ == "effc.backends.tvm.cpu.lowering"
    with pytest.raises(effc.EffcError, match="no TVM lowering named 'gpu9'"):
        get_lowering(dataclasses.replace(get_target("arm"), lowering="gpu9"))
