"""`effc profile` on microcontroller artifacts: flash and RAM from the ELF, emulated instruction counts that repeat
exactly, per-kernel counts that add up, and a kernel of known length counted right. Fixture: tests/mcu_fixture.py."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
from click.testing import CliRunner

import effc
from effc.calib import CalibrationData
from effc.cli import cli
from effc.pipeline.context import Context
from effc.profile.mcu import profile_mcu
from effc.zoo import get
from tests.mcu_fixture import KERNELS_C, write_fixture

pytestmark = pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                                reason="needs gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm")
LOOP = 100_000  # iterations of a two-instruction loop (subs, bne) in the second kernel
COUNTED = KERNELS_C.replace("*index = best;", f'*index = best; register unsigned n __asm__("r0") = {LOOP}; '
                                               '__asm__ volatile("1: subs %0, %0, #1\\n bne 1b" : "+r"(n));')


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EFFC_CACHE", str(tmp_path_factory.getbasetemp() / "mcu-cache"))


@pytest.fixture(scope="module")
def counted(tmp_path_factory):
    return write_fixture(tmp_path_factory.mktemp("profile") / "counted.cortex-m4.effc", "cortex-m4", kernels_c=COUNTED)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.slow  # two profiles: six emulator runs and two builds, about 3 s
def test_profile_json_is_deterministic_and_adds_up(counted):
    first = invoke("profile", counted, "--repeat", "3", "--json")
    assert first.exit_code == 0, first.output
    report = json.loads(first.output)
    assert report["deterministic"] and "not cycles" in report["note"]
    assert json.loads(invoke("profile", counted, "--repeat", "3", "--json").output) == report
    kernels = report["kernels"]
    assert [k["name"] for k in kernels] == ["dense_relu", "copy_argmax"]
    assert sum(k["instructions"] for k in kernels) <= report["instructions_profiled"]
    assert 0 < report["ram"]["stack_used"] < report["ram"]["stack_reserved"]
    assert report["flash"]["text"] > 0 and report["flash"]["rodata"] >= report["weight_bytes"] == 36 * 4
    assert report["ram"]["bss"] >= report["arena"]["bytes"]
    assert kernels[0]["instructions_per_mac"] == pytest.approx(kernels[0]["instructions"] / kernels[0]["macs"])
    assert kernels[0]["arithmetic"] == "float" and kernels[0]["onnx_nodes"] == ["Gemm_0", "Relu_1"]


@pytest.mark.parametrize("target", ["cortex-m4", pytest.param("cortex-m55", marks=pytest.mark.slow)])
def test_a_kernel_of_known_length_is_counted_to_the_tick(tmp_path, target):
    profile = profile_mcu(write_fixture(tmp_path / f"counted.{target}.effc", target, kernels_c=COUNTED), repeat=4)
    per_tick = 40 if target == "cortex-m4" else 31.25
    loop = profile.kernels[1].instructions
    assert 2 * LOOP <= loop <= 2 * LOOP + 100 + per_tick  # the loop, its few other instructions, one tick of phase
    assert profile.instructions >= loop
    assert all(run == profile.instructions_per_run[0] for run in profile.instructions_per_run)


def test_profile_table_and_refusals(counted, tmp_path):
    result = invoke("profile", counted, "--repeat", "2")
    assert result.exit_code == 0, result.output
    assert "emulated instruction counts" in result.output and "not" in result.output and "cycles" in result.output
    assert "dense_relu" in result.output and "flash" in result.output and "stack" in result.output
    result = invoke("profile", counted, "--html", tmp_path / "p.html")
    assert result.exit_code == 2 and "not available for microcontroller" in result.output
    assert not (tmp_path / "p.html").exists()
    m0 = write_fixture(tmp_path / "m0.effc", "cortex-m0plus")
    result = invoke("profile", m0)
    assert result.exit_code == 2 and "compile-only" in result.output


@pytest.mark.tvm
@pytest.mark.skipif(importlib.util.find_spec("effc.backends.tvm.mcu.lowering") is None,
                    reason="the microcontroller lowering (effc/backends/tvm/mcu/lowering.py) is not here")
def test_profile_of_int8_digits_on_cortex_m4(tmp_path):
    zoo = get("digits")
    artifact = effc.compile(str(zoo.onnx_path), "cortex-m4", pipeline="default,int8", out=tmp_path / "d.effc",
                            ctx=Context(calibration=CalibrationData.load(zoo.calib_path)), input_shapes={"input": [1, 1, 8, 8]})
    mcu = artifact.meta["mcu"]
    profile = profile_mcu(artifact.folder, repeat=2, inputs=zoo.eval_path)
    assert profile.deterministic and [k.name for k in profile.kernels] == [k["name"] for k in mcu["kernels"]]
    assert sum(k.instructions for k in profile.kernels) <= profile.instructions_profiled
    assert any(k.arithmetic == "integer" for k in profile.kernels)
    assert profile.total_macs == sum(k["macs"] for k in mcu["kernels"]) > 0
    assert profile.flash["rodata"] >= mcu["weight_bytes"] and profile.ram["bss"] >= mcu["arena_bytes"]
    assert 0 < profile.ram["stack_used"] < profile.ram["stack_reserved"]
