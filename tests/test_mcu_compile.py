"""The microcontroller lowering (effc.backends.tvm.mcu): digits compiled for cortex-m4 is plain C over one static
arena; built with the host's gcc it matches ONNX Runtime, it cross-compiles with arm-none-eabi-gcc, and models
that do not fit or cannot be lowered are refused."""

from __future__ import annotations

import ctypes
import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import helper

import effc
from effc.backends.tvm.mcu.arena import Buffer, plan_arena
from effc.cli import cli
from effc.errors import EffcError
from effc.ir import load_model
from effc.onnx_runtime import ort_session, run_model, run_session
from effc.targets import Memory, get_target
from effc.targets.mcu import MCU_BOARDS
from effc.zoo import get
from tests.conftest import FLOAT, make_model

SHAPE = [1, 1, 8, 8]
SOURCES = ["model.c", "kernels.c", "weights.c"]


def host_library(folder: Path, work: Path):
    """The artifact's C sources built with the host's gcc into a shared object: effc_run via ctypes."""
    library = work / f"{folder.name}.so"
    subprocess.run(["gcc", "-O2", "-fPIC", "-shared", "-Wall", *[str(folder / s) for s in SOURCES], "-o", str(library),
                    "-lm"], check=True, capture_output=True, text=True)
    return ctypes.CDLL(str(library))


def run_host(lib, meta: dict, x: np.ndarray) -> np.ndarray:
    """Outputs of effc_run for each row of `x` (the model's single input, batch 1 per call)."""
    (shape, dtype), = [(o["shape"], o["dtype"]) for o in meta["outputs"]]
    results = []
    for row in x:
        data = np.ascontiguousarray(row[None], dtype=meta["inputs"][0]["dtype"])
        out = np.zeros(shape, dtype)
        assert lib.effc_run(ctypes.c_void_p(data.ctypes.data), ctypes.c_void_p(out.ctypes.data)) == 0
        results.append(out[0])
    return np.stack(results)


@pytest.fixture(scope="module")
def digits_m4(tmp_path_factory):
    """digits (float) compiled for cortex-m4 once for this module: (artifact folder, effc.json, host library)."""
    work = tmp_path_factory.mktemp("mcu")
    artifact = effc.compile(get("digits").onnx_path, "cortex-m4", out=work / "digits.effc", input_shapes={"input": SHAPE})
    return artifact.folder, artifact.meta, host_library(artifact.folder, work)


@pytest.mark.tvm
def test_digits_float_on_host_gcc_matches_onnxruntime(digits_m4):
    _, meta, lib = digits_m4
    x = np.load(get("digits").eval_path)["input"].astype(np.float32)
    reference = run_model(load_model(get("digits").onnx_path), {"input": x})["logits"]
    ours = run_host(lib, meta, x)
    assert np.abs(ours - reference).max() <= 1e-4 * np.abs(reference).max()
    assert np.array_equal(ours.argmax(axis=1), reference.argmax(axis=1))


@pytest.mark.tvm
def test_sources_need_no_tvm_runtime_and_no_heap(digits_m4):
    folder, meta, _ = digits_m4
    assert meta["mcu"]["sources"] == SOURCES
    for name in [*SOURCES, "model.h"]:
        text = (folder / name).read_text()
        for banned in ("TVMBackendAllocWorkspace", "TVMFFI", "tvm/", "malloc", "free(", "_sbrk"):
            assert banned not in text, f"{name} contains {banned}"
    header = (folder / "model.h").read_text()
    assert "int effc_run(const float *input0, float *output0);" in header
    assert "#define EFFC_INPUT0_ELEMS 64" in header and "#define EFFC_OUTPUT0_ELEMS 10" in header
    model = (folder / "model.c").read_text()
    calls = re.findall(r"EFFC_KERNEL_BEGIN\((\d+)\); (\w+)\(", model)
    assert [int(i) for i, _ in calls] == list(range(len(meta["mcu"]["kernels"])))
    assert [k for _, k in calls] == [f"effc_{k['name']}" for k in meta["mcu"]["kernels"]]
    assert "(float*)input0" in model.split("EFFC_KERNEL_BEGIN(0)")[1].split("\n")[0]
    assert "output0)" in model.split(f"EFFC_KERNEL_BEGIN({len(calls) - 1})")[1].split("\n")[0]


@pytest.mark.tvm
def test_arena_is_the_planned_one_and_no_live_tensors_overlap(digits_m4):
    folder, meta, _ = digits_m4
    mcu = meta["mcu"]
    assert f"#define EFFC_ARENA_BYTES {mcu['arena_bytes']}\n" in (folder / "model.h").read_text()
    buffers = [Buffer(b["name"], b["bytes"], b["first"], b["last"]) for b in mcu["arena_buffers"]]
    plan = plan_arena(buffers)
    assert plan.arena_bytes == mcu["arena_bytes"] and plan.lower_bound_bytes == mcu["arena_lower_bound"]
    assert plan.offsets == {b["name"]: b["offset"] for b in mcu["arena_buffers"]}
    assert mcu["arena_lower_bound"] <= mcu["arena_bytes"] <= mcu["arena_naive_sum"]
    assert mcu["arena_bytes"] == mcu["arena_lower_bound"]  # on a chain the greedy plan reaches the bound
    for i, x in enumerate(mcu["arena_buffers"]):
        for y in mcu["arena_buffers"][i + 1:]:
            if x["first"] <= y["last"] and y["first"] <= x["last"]:
                assert x["offset"] + x["bytes"] <= y["offset"] or y["offset"] + y["bytes"] <= x["offset"]
    assert meta["mcu"]["weight_bytes"] == meta["weight_bytes"] > 0
    assert [k["arithmetic"] for k in mcu["kernels"]] == ["float"] * len(mcu["kernels"])
    assert sum(k["macs"] for k in mcu["kernels"]) == sum(n[2] for n in meta["onnx_nodes"])


@pytest.mark.tvm
@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="arm-none-eabi-gcc not installed")
def test_sources_cross_compile_for_cortex_m4_with_weights_in_rodata(digits_m4, tmp_path):
    folder, meta, _ = digits_m4
    flags = list(MCU_BOARDS["cortex-m4"].gcc_flags)
    for name in SOURCES:
        done = subprocess.run(["arm-none-eabi-gcc", *flags, "-O2", "-Wall", "-Werror", "-c", str(folder / name),
                               "-o", str(tmp_path / f"{name}.o")], check=False, capture_output=True, text=True)
        assert done.returncode == 0 and not done.stderr, done.stderr
    sections = subprocess.run(["arm-none-eabi-size", "-A", str(tmp_path / "weights.c.o")], capture_output=True,
                              text=True, check=True).stdout
    rodata = int(re.search(r"^\.rodata\s+(\d+)", sections, re.MULTILINE).group(1))
    assert meta["mcu"]["weight_bytes"] <= rodata < meta["mcu"]["weight_bytes"] + 16 * len(meta["mcu"]["kernels"]) * 8
    symbols = subprocess.run(["arm-none-eabi-nm", "-S", str(tmp_path / "model.c.o")], capture_output=True, text=True,
                             check=True).stdout
    arena = next(line.split() for line in symbols.splitlines() if line.endswith(" effc_arena"))
    assert int(arena[1], 16) == meta["mcu"]["arena_bytes"]


@pytest.mark.tvm
def test_a_model_too_large_for_the_board_is_refused_with_the_numbers(tmp_path):
    small = dataclasses.replace(get_target("cortex-m4"), name="cortex-m4-tiny", memory=Memory(64 * 1024, 4096))
    with pytest.raises(EffcError, match=r"arena needs 12,288 B of RAM .* board has 4,096 B.*weights need 190,120 B of "
                                        r"flash and the board has 65,536 B"):
        effc.compile(get("digits").onnx_path, small, out=tmp_path / "tiny.effc", input_shapes={"input": SHAPE})
    assert not (tmp_path / "tiny.effc").exists()


def _invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.tvm
def test_an_op_without_a_c_kernel_exits_2_naming_it(tmp_path):
    proto = make_model([helper.make_node("Relu", ["x"], ["r"], name="relu"),
                        helper.make_node("TopK", ["r", "k"], ["v", "i"], name="top3", axis=1)],
                       [("x", FLOAT, [1, 10])], [("v", FLOAT, [1, 3]), ("i", onnx.TensorProto.INT64, [1, 3])],
                       {"k": np.array([3], np.int64)})
    onnx.save(proto, tmp_path / "topk.onnx")
    result = _invoke("compile", tmp_path / "topk.onnx", "--target", "cortex-m4", "-o", tmp_path / "topk.effc")
    assert result.exit_code == 2
    assert "relax.topk" in result.output and "top3 (TopK)" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "topk.effc").exists()


@pytest.mark.tvm
def test_cortex_m0plus_refuses_a_float_model_and_takes_its_int8_version(tmp_path):
    digits = get("digits")
    common = ["--target", "cortex-m0plus", "--input-shape", "input=1,1,8,8"]
    result = _invoke("compile", digits.onnx_path, *common, "-o", tmp_path / "m0.effc")
    assert result.exit_code == 2
    assert "no FPU" in result.output and "int8" in result.output
    assert not (tmp_path / "m0.effc").exists()
    result = _invoke("compile", digits.onnx_path, *common, "--passes", "int8", "--calib", digits.calib_path,
                     "-o", tmp_path / "m0-int8.effc")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "m0-int8.effc" / "effc.json").read_text())["mcu"]["weight_bytes"] < 60_000
    assert "effc_dot" not in (tmp_path / "m0-int8.effc" / "kernels.c").read_text()  # no DSP: integer_conv.py's kernel


def test_the_cortex_m_targets_are_listed():
    result = _invoke("targets", "--json")
    names = {t["name"]: t for t in json.loads(result.output)["targets"]}
    for name in ("cortex-m4", "cortex-m7", "cortex-m55", "cortex-m0plus"):
        assert names[name]["record"]["lowering"] == "mcu"
    assert "float models are refused" in names["cortex-m0plus"]["record"]["description"]


@pytest.fixture(scope="module")
def digits_int8_m4(tmp_path_factory):
    """digits quantized by effc's int8 pass for cortex-m4, compiled once: (folder, effc.json, quantized model,
    host library)."""
    from effc.calib import CalibrationData
    from effc.pipeline.context import Context

    work = tmp_path_factory.mktemp("mcu-int8")
    z = get("digits")
    artifact = effc.compile(z.onnx_path, "cortex-m4", pipeline="int8", ctx=Context(calibration=CalibrationData.load(z.calib_path)),
                            out=work / "int8.effc", input_shapes={"input": SHAPE})
    return artifact.folder, artifact.meta, artifact.passes.model, host_library(artifact.folder, work)


def _output_step(model) -> np.ndarray:
    """The quantization step of the float output of digits' last integer Gemm: its bias scale, sx * sw per column."""
    producer = next(n for n in model.graph.nodes if any(t is model.graph.outputs[0] for t in n.outputs))
    assert producer.op == "Gemm"
    return np.asarray(producer.inputs[2].inputs[0].inputs[1].values, np.float32)


@pytest.mark.tvm
def test_digits_int8_on_host_gcc_matches_onnxruntime_within_one_step(digits_int8_m4):
    _, meta, quantized, lib = digits_int8_m4
    x = np.load(get("digits").eval_path)["input"].astype(np.float32)
    session = ort_session(quantized)
    reference = np.concatenate([run_session(session, {"input": x[i:i + 1]})["logits"] for i in range(len(x))])
    ours = run_host(lib, meta, x)
    off = np.abs(ours - reference) > _output_step(quantized)[None, :] * 1.001
    assert off.mean() <= 0.001, f"{off.sum()} of {off.size} outputs differ by more than one step"
    assert np.array_equal(ours.argmax(axis=1), reference.argmax(axis=1))


@pytest.mark.tvm
def test_digits_int8_keeps_int8_weights_in_flash_and_integer_kernels(digits_int8_m4, digits_m4):
    folder, meta, _, _ = digits_int8_m4
    mcu, float_mcu = meta["mcu"], digits_m4[1]["mcu"]
    weights = (folder / "weights.c").read_text()
    int8_bytes = sum(int(n) for n in re.findall(r"^const int8_t effc_w\d+\[(\d+)\]", weights, re.MULTILINE))
    assert int8_bytes >= 0.9 * mcu["weight_bytes"]  # the conv and matmul weights; biases are int32, scales float
    assert mcu["weight_bytes"] < 0.3 * float_mcu["weight_bytes"]
    anchors = [k for k in mcu["kernels"] if k["macs"]]
    assert len(anchors) == 5 and all(k["arithmetic"] == "integer" for k in anchors), anchors
    assert sum(k["macs"] for k in anchors) == sum(k["macs"] for k in float_mcu["kernels"])
    assert mcu["arena_lower_bound"] <= mcu["arena_bytes"] < float_mcu["arena_bytes"]
    assert not any("pad" in k["name"] for k in mcu["kernels"])  # the zero-point padding is inside the convs
    kernels = (folder / "kernels.c").read_text()
    assert len(re.findall(r"effc_dot[24]_s8s8\(\(", kernels)) == 5  # cortex-m4 has DSP: every conv and Gemm is a SMLAD dot
    assert all(i["integer"] for i in meta["integer_islands"])


@pytest.mark.tvm
@pytest.mark.skipif(shutil.which("arm-none-eabi-gcc") is None, reason="arm-none-eabi-gcc not installed")
def test_int8_sources_cross_compile_for_cortex_m0plus_and_m7(digits_int8_m4, tmp_path):
    folder = digits_int8_m4[0]
    for core in ("cortex-m0plus", "cortex-m7"):
        flags = list(MCU_BOARDS[core].gcc_flags)
        for name in SOURCES:
            done = subprocess.run(["arm-none-eabi-gcc", *flags, "-O2", "-Wall", "-Werror", "-c", str(folder / name),
                                   "-o", str(tmp_path / f"{core}-{name}.o")], check=False, capture_output=True,
                                  text=True)
            assert done.returncode == 0 and not done.stderr, done.stderr
    listing = subprocess.run(["arm-none-eabi-objdump", "-d", str(tmp_path / "cortex-m7-kernels.c.o")],
                             capture_output=True, text=True, check=True).stdout
    assert "smlad" in listing and "sxtb16" in listing
    listing = subprocess.run(["arm-none-eabi-objdump", "-d", str(tmp_path / "cortex-m0plus-kernels.c.o")],
                             capture_output=True, text=True, check=True).stdout
    assert "smlad" not in listing  # armv6-m has no DSP extension: the portable loop


def test_inline_rounding_equals_nearbyintf(tmp_path):
    """kernels.c's replacement for nearbyintf rounds like it (ties to even) on ties, large values, NaN and inf."""
    from effc.backends.tvm.mcu.c_kernels import PREAMBLE, ROUND_SOURCE

    source = tmp_path / "round.c"
    source.write_text(PREAMBLE + ROUND_SOURCE + "void round_all(const float *x, float *y, int n) {\n"
                      "  for (int i = 0; i < n; ++i) y[i] = effc_nearbyintf(x[i]);\n}\n")
    subprocess.run(["gcc", "-O2", "-fPIC", "-shared", str(source), "-o", str(tmp_path / "round.so"), "-lm"], check=True)
    lib = ctypes.CDLL(str(tmp_path / "round.so"))
    rng = np.random.default_rng(0)
    x = np.concatenate([np.arange(-300, 300, 0.25), rng.normal(0, 1e3, 10000), rng.normal(0, 1e8, 1000),
                        [2.0**22 + 0.5, 2.0**23 - 0.5, 2.0**23, 2.0**23 + 1, -(2.0**23 - 0.5), 0.0, -0.0, 0.49999997,
                         np.inf, -np.inf, np.nan, 3.4e38]]).astype(np.float32)
    y = np.zeros_like(x)
    lib.round_all(ctypes.c_void_p(x.ctypes.data), ctypes.c_void_p(y.ctypes.data), ctypes.c_int(len(x)))
    np.testing.assert_array_equal(y, np.rint(x))
    assert np.array_equal(np.signbit(y), np.signbit(np.rint(x)))


def _mobile_block(seed: int = 0) -> onnx.ModelProto:
    """A MobileNet-style block with random weights: conv 3x3 stride 2, depthwise 3x3, Clip (ReLU6), pointwise,
    global average pool, Gemm, Softmax."""
    rng = np.random.default_rng(seed)

    def w(*shape):
        return (rng.standard_normal(shape) * 0.3).astype(np.float32)

    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv", strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"], name="relu6"),
             helper.make_node("Conv", ["r1", "wd"], ["d1"], name="depthwise", group=8, pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["d1"], ["r2"], name="relu"),
             helper.make_node("Conv", ["r2", "wp", "bp"], ["p1"], name="pointwise"),
             helper.make_node("GlobalAveragePool", ["p1"], ["g"], name="pool"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "wg", "bg"], ["logits"], name="fc", transB=1),
             helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=1)]
    return make_model(nodes, [("x", FLOAT, [1, 3, 12, 12])], [("y", FLOAT, [1, 5])],
                      {"w1": w(8, 3, 3, 3), "b1": w(8), "lo": np.float32(0), "hi": np.float32(6), "wd": w(8, 1, 3, 3),
                       "wp": w(12, 8, 1, 1), "bp": w(12), "wg": w(5, 12), "bg": w(5)})


@pytest.mark.tvm
def test_a_mobilenet_style_block_on_host_gcc_matches_onnxruntime(tmp_path):
    onnx.save(_mobile_block(), tmp_path / "block.onnx")
    artifact = effc.compile(tmp_path / "block.onnx", "cortex-m7", out=tmp_path / "block.effc")
    lib = host_library(artifact.folder, tmp_path)
    x = np.random.default_rng(1).standard_normal((16, 3, 12, 12)).astype(np.float32)
    session = ort_session(load_model(tmp_path / "block.onnx"))
    reference = np.concatenate([run_session(session, {"x": x[i:i + 1]})["y"] for i in range(len(x))])
    ours = run_host(lib, artifact.meta, x)
    assert np.abs(ours - reference).max() <= 1e-4 * np.abs(reference).max()
    text = "".join((artifact.folder / name).read_text() for name in SOURCES)
    assert "TVMBackend" not in text and "malloc" not in text
    mcu = artifact.meta["mcu"]
    assert mcu["arena_lower_bound"] <= mcu["arena_bytes"] <= mcu["arena_naive_sum"]


@pytest.mark.tvm
def test_several_outputs_views_and_an_output_that_is_the_input(tmp_path):
    """Outputs written in place by their kernels, one through a reshape view, one the input itself (copied)."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Mul", ["r", "two"], ["m"], name="mul"),
             helper.make_node("Flatten", ["m"], ["y"], name="flatten"),
             helper.make_node("Identity", ["x"], ["z"], name="identity")]
    proto = make_model(nodes, [("x", FLOAT, [1, 2, 3, 4])], [("r", FLOAT, [1, 2, 3, 4]), ("y", FLOAT, [1, 24]),
                                                           ("z", FLOAT, [1, 2, 3, 4])], {"two": np.float32(2)})
    onnx.save(proto, tmp_path / "outs.onnx")
    artifact = effc.compile(tmp_path / "outs.onnx", "cortex-m4", out=tmp_path / "outs.effc")
    lib = host_library(artifact.folder, tmp_path)
    x = np.random.default_rng(2).standard_normal((1, 2, 3, 4)).astype(np.float32)
    outs = [np.zeros(o["shape"], o["dtype"]) for o in artifact.meta["outputs"]]
    assert lib.effc_run(*(ctypes.c_void_p(a.ctypes.data) for a in [x, *outs])) == 0
    reference = run_model(load_model(tmp_path / "outs.onnx"), {"x": x})
    for spec, ours in zip(artifact.meta["outputs"], outs):
        np.testing.assert_allclose(ours, reference[spec["name"]], rtol=1e-6)
    assert "#define EFFC_NUM_OUTPUTS 3" in (artifact.folder / "model.h").read_text()
