"""Microcontroller artifacts under qemu-system-arm: the board project builds with arm-none-eabi-gcc (no heap), the
harness moves inputs and outputs through semihosting, `effc run` / `effc.load_artifact` match NumPy, and faults,
hangs, stack overflows, oversized models, compile-only targets and missing tools get the error contract.

The model is the hand-written fixture of tests/mcu_fixture.py (no TVM): each build + run takes well under a second.
The last test compiles digits (float on cortex-m4 and m7, int8 on m4) and ds_cnn (float m4, int8 m7) and\ncompares with ONNX Runtime.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

import effc
from effc.backends.tvm.mcu.board import effc_run_params, harness_io_source
from effc.calib import CalibrationData
from effc.cli import cli
from effc.errors import EffcError
from effc.onnx_runtime import ort_session, run_session
from effc.pipeline.context import Context
from effc.runners.qemu_system_arm import MCURunFailed, QemuSystemArmRunner, build_elf
from effc.targets.mcu import MCU_BOARDS
from effc.zoo import get
from tests.mcu_fixture import IN, KERNELS_C, MODEL_H, reference, write_fixture

pytestmark = pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm")),
                                reason="needs gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mcu-cache")


@pytest.fixture(autouse=True)
def private_cache(cache, monkeypatch):
    monkeypatch.setenv("EFFC_CACHE", str(cache))


@pytest.fixture(scope="module")
def m4(tmp_path_factory):
    return write_fixture(tmp_path_factory.mktemp("fixture") / "dense.cortex-m4.effc", "cortex-m4")


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def samples(n=4, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 1, IN)).astype(np.float32)


@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m7", "cortex-m55"])
def test_outputs_match_numpy(tmp_path, target):
    artifact = effc.load_artifact(write_fixture(tmp_path / f"dense.{target}.effc", target))
    assert artifact.runner.where.startswith("qemu-system-arm")
    for x in samples():
        got = artifact(x=x)
        want = reference(x)
        np.testing.assert_allclose(got["y"], want[0], rtol=1e-5, atol=1e-6)
        assert got["y"].dtype == np.float32 and got["label"].dtype == np.int32
        np.testing.assert_array_equal(got["label"], want[1])


def test_effc_run_writes_npy(m4, tmp_path):
    x = samples(1)[0]
    np.save(tmp_path / "x.npy", x)
    result = invoke("run", m4, "--input", f"x={tmp_path / 'x.npy'}", "--output-dir", tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["where"] == "qemu-system-arm mps2-an386 (cortex-m4)"
    np.testing.assert_allclose(np.load(tmp_path / "out" / "y.npy"), reference(x)[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "label.npy"), reference(x)[1])


def test_elf_has_no_heap_and_is_cached(m4):
    elf = build_elf(m4)
    symbols = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True).stdout
    names = {line.split()[-1] for line in symbols.splitlines()}
    assert "effc_run" in names and "Reset_Handler" in names
    assert not names & {"malloc", "_sbrk", "_malloc_r", "free", "TVMBackendAllocWorkspace"}
    stamp = elf.stat().st_mtime_ns
    assert build_elf(m4) == elf and elf.stat().st_mtime_ns == stamp  # same content: not rebuilt
    assert build_elf(m4, profile=True) != elf


def test_make_in_the_artifact_folder_builds_both_elves(m4, tmp_path):
    folder = shutil.copytree(m4, tmp_path / "copy")
    done = subprocess.run(["make", "-s", "all", "profile"], check=False, cwd=folder, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (folder / "app.elf").is_file() and (folder / "app_profile.elf").is_file()


def test_hard_fault_is_reported(tmp_path):
    faulting = KERNELS_C.replace("*index = best;", "*index = best; *(volatile int *)0xF0000000u = 1;")
    artifact = effc.load_artifact(write_fixture(tmp_path / "fault.effc", kernels_c=faulting))
    with pytest.raises(MCURunFailed, match="faulted on qemu mps2-an386: HardFault"):
        artifact(x=samples(1)[0])
    x = tmp_path / "x.npy"
    np.save(x, samples(1)[0])
    result = invoke("run", tmp_path / "fault.effc", "--input", f"x={x}", "--output-dir", tmp_path / "out")
    assert result.exit_code == 3 and "HardFault" in result.output
    assert not (tmp_path / "out" / "y.npy").exists()


def test_hang_times_out(tmp_path):
    hanging = KERNELS_C.replace("*index = best;", "*index = best; for (volatile int k = 0; ; k++) {}")
    folder = write_fixture(tmp_path / "hang.effc", kernels_c=hanging)
    runner = QemuSystemArmRunner(folder, json.loads((folder / "effc.json").read_text()), timeout_s=1)
    with pytest.raises(MCURunFailed, match="did not finish within 1 s"):
        runner([samples(1)[0]])


def test_stack_overflow_is_reported(tmp_path):
    # a kernel frame of 32 KB, written through, on the default 16 KB stack: no painted word is left
    deep = KERNELS_C.replace("void dense_relu(const float *x, float *y) {",
                             "void dense_relu(const float *x, float *y) {\n  volatile float big[8192]; "
                             "for (int i = 0; i < 8192; i++) big[i] = x[0];")
    artifact = effc.load_artifact(write_fixture(tmp_path / "deep.effc", kernels_c=deep))
    with pytest.raises(MCURunFailed, match="overflowed its 16,384-byte stack"):
        artifact(x=samples(1)[0])


def test_model_too_large_for_flash_is_refused_with_numbers(tmp_path):
    huge = KERNELS_C.replace("void dense_relu(const float *x, float *y) {",
                             "const char huge[1200000] = {1};\nvoid dense_relu(const float *x, float *y) {\n  y[0] = huge[(int)x[0]];")
    folder = write_fixture(tmp_path / "huge.effc", kernels_c=huge)
    with pytest.raises(EffcError, match=r"does not fit the board's FLASH: over by [\d,]+ bytes"):
        build_elf(folder)
    x = tmp_path / "x.npy"
    np.save(x, samples(1)[0])
    result = invoke("run", folder, "--input", f"x={x}")
    assert result.exit_code == 2 and "FLASH" in result.output


def test_compile_only_target_is_refused(tmp_path):
    folder = write_fixture(tmp_path / "m0.effc", "cortex-m0plus")
    with pytest.raises(EffcError, match="cortex-m0plus is compile-only"):
        effc.load_artifact(folder)
    build_elf(folder)  # the C project still builds for the real board
    x = tmp_path / "x.npy"
    np.save(x, samples(1)[0])
    result = invoke("run", folder, "--input", f"x={x}")
    assert result.exit_code == 2 and "compile-only" in result.output and "Traceback" not in result.output


def test_missing_tools_are_named(m4, monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "qemu-system-arm" else real_which(name))
    with pytest.raises(EffcError, match="qemu-system-arm is not installed.*apt-get install"):
        effc.load_artifact(m4)
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "arm-none-eabi-gcc" else real_which(name))
    with pytest.raises(EffcError, match="arm-none-eabi-gcc is not installed"):
        build_elf(m4, profile=True)


def test_bad_inputs_get_the_error_contract(m4, tmp_path):
    artifact = effc.load_artifact(m4)
    with pytest.raises(EffcError, match="has shape"):
        artifact(x=np.zeros((1, IN + 1), np.float32))
    with pytest.raises(EffcError, match="has dtype"):
        artifact(x=np.zeros((1, IN), np.float64))
    np.save(tmp_path / "wrong.npy", np.zeros((2, IN), np.float32))
    result = invoke("run", m4, "--input", f"x={tmp_path / 'wrong.npy'}")
    assert result.exit_code == 2 and "has shape" in result.output
    result = invoke("run", m4, "--input", f"x={tmp_path / 'x.npy'}", "--rpc", "127.0.0.1:9")
    assert result.exit_code == 2


def test_missing_source_file_is_a_clear_error(m4, tmp_path):
    folder = shutil.copytree(m4, tmp_path / "partial")
    (folder / "link.ld").unlink()
    with pytest.raises(EffcError, match="link.ld missing"):
        build_elf(folder)


def test_harness_io_follows_model_h():
    source = harness_io_source(MODEL_H)
    assert "static int32_t effc_output1[EFFC_OUTPUT1_ELEMS]" in source
    assert "return effc_run(effc_input0, effc_output0, effc_output1);" in source
    assert effc_run_params("int effc_run(const int8_t *input0, uint8_t *output0);") == [("int8_t", "input0"), ("uint8_t", "output0")]
    with pytest.raises(ValueError, match="inputs .const pointers. before its outputs"):
        effc_run_params("int effc_run(float *output0, const float *input0);")
    with pytest.raises(ValueError, match="not a pointer to"):
        effc_run_params("int effc_run(const double *input0, float *output0);")
    with pytest.raises(ValueError, match="EFFC_NUM_OUTPUTS"):
        harness_io_source(MODEL_H.replace("#define EFFC_NUM_OUTPUTS 2", "#define EFFC_NUM_OUTPUTS 3"))


# Zoo models through the microcontroller lowering, under qemu, against ONNX Runtime on the passes' model.
HAS_LOWERING = importlib.util.find_spec("effc.backends.tvm.mcu.lowering") is not None
ZOO_SHAPES = {"digits": [1, 1, 8, 8], "ds_cnn": [1, 1, 49, 10]}
PIPELINES = {"float": "default", "int8": "default,int8", "pruned-clustered-int8": "default,prune(ratio=0.3),cluster(k=16),int8"}
ZOO_CASES = [("digits", "float", "cortex-m4"), ("digits", "float", "cortex-m7"), ("digits", "int8", "cortex-m4"),
             ("digits", "pruned-clustered-int8", "cortex-m4"), ("digits", "pruned-clustered-int8", "cortex-m7"),
             pytest.param("ds_cnn", "float", "cortex-m4", marks=pytest.mark.zoo),
             pytest.param("ds_cnn", "int8", "cortex-m7", marks=pytest.mark.zoo)]


@pytest.fixture(scope="module")
def zoo_artifacts(tmp_path_factory):
    """(model, variant, target) -> (artifact, the model its passes produced), compiled on first use."""
    folder, made = tmp_path_factory.mktemp("zoo-mcu"), {}

    def compiled(name: str, variant: str, target: str):
        if (name, variant, target) not in made:
            zoo = get(name)
            ctx = Context(calibration=CalibrationData.load(zoo.calib_path)) if variant != "float" else None
            artifact = effc.compile(str(zoo.onnx_path), target, pipeline=PIPELINES[variant],
                                    ctx=ctx, out=folder / f"{name}.{variant}.{target}.effc",
                                    input_shapes={"input": ZOO_SHAPES[name]})
            made[name, variant, target] = artifact, artifact.passes.model
        return made[name, variant, target]

    return compiled


def _tolerance(model, scale: float) -> float:
    """One quantization step when a DequantizeLinear produces the output; else 1e-4 of the output scale (the int8
    pass leaves the last Gemm float: float arithmetic over the same dequantized inputs)."""
    producer = next(n for n in model.graph.nodes if n.outputs[0].name == model.graph.outputs[0].name)
    if producer.op == "DequantizeLinear":
        return float(np.max(producer.inputs[1].values)) * 1.001
    return 1e-4 * scale


@pytest.mark.tvm
@pytest.mark.skipif(not HAS_LOWERING, reason="the microcontroller lowering (effc/backends/tvm/mcu/lowering.py) is not here")
@pytest.mark.parametrize("name,variant,target", ZOO_CASES)
def test_zoo_model_under_qemu_matches_onnx_runtime(zoo_artifacts, name, variant, target):
    compiled, reference = zoo_artifacts(name, variant, target)
    artifact = effc.load_artifact(compiled.folder)  # as a user loads it: the qemu runner from effc.json
    assert artifact.runner.where.startswith(f"qemu-system-arm {MCU_BOARDS[target].qemu_machine}")
    session = ort_session(reference)
    for x in np.load(get(name).eval_path)["input"][:6]:
        got = artifact(input=x[None])["logits"]
        want = run_session(session, {"input": x[None]})["logits"]
        scale = float(np.abs(want).max())
        assert np.abs(got - want).max() <= (1e-4 * scale if variant == "float" else _tolerance(reference, scale))
        assert got.argmax() == want.argmax()
