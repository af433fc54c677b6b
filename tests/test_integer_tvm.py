"""int8 models run as integer arithmetic inside TVM: the QDQ rewrite (effc.backends.tvm.integer) on digits for x86,
checked against ONNX Runtime on effc's int8 ONNX model, in the TIR, and in the artifact's params."""

from __future__ import annotations

import functools
import json
import subprocess

import numpy as np
import pytest

import effc
from effc.calib import CalibrationData
from effc.ir import load_model
from effc.onnx_runtime import ort_session, run_model, run_session
from effc.pipeline.context import Context
from effc.targets import get_target
from effc.zoo import get

SHAPE = [1, 1, 8, 8]


@functools.cache
def _int8_digits(target: str, cpu: str | None = None):
    """digits quantized by effc's int8 pass for `target` (`cpu`), its input pinned to one image."""
    z = get("digits")
    ctx = Context(calibration=CalibrationData.load(z.calib_path), target=get_target(target, cpu))
    model = effc.optimize(load_model(z.onnx_path), "int8", ctx).model
    model.graph.inputs[0].shape = SHAPE
    return model


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """digits compiled for x86 as int8 and as float, once for this module."""
    folder = tmp_path_factory.mktemp("integer")
    z = get("digits")
    int8 = effc.compile(z.onnx_path, "x86", pipeline="int8", ctx=Context(calibration=CalibrationData.load(z.calib_path)),
                        out=folder / "int8.effc", input_shapes={"input": SHAPE})
    float_ = effc.compile(z.onnx_path, "x86", out=folder / "float.effc", input_shapes={"input": SHAPE})
    return folder, int8, float_


def _output_step(model) -> np.ndarray:
    """The quantization step of the graph's output: its scale where it is dequantized, else (the float output of
    an integer Gemm/Conv) its bias scale, sx * sw per channel."""
    producer = next(n for n in model.graph.nodes if any(t is model.graph.outputs[0] for t in n.outputs))
    if producer.op == "DequantizeLinear":
        return np.asarray(producer.inputs[1].values, np.float32).reshape(-1)
    bias_dq = producer.inputs[2].inputs[0]
    return np.asarray(bias_dq.inputs[1].values, np.float32)


@pytest.mark.tvm
def test_digits_int8_on_x86_equals_onnxruntime_within_one_step(built):
    _, artifact, _ = built
    quantized = artifact.passes.model
    step = _output_step(quantized)
    x = np.load(get("digits").eval_path)["input"][:64].astype(np.float32)
    ours = np.concatenate([artifact(input=x[i:i + 1])["logits"] for i in range(len(x))])
    reference = np.concatenate([run_model(quantized, {"input": x[i:i + 1]})["logits"] for i in range(len(x))])
    off = np.abs(ours - reference) > step[None, :] * 1.001
    assert off.mean() <= 0.001, f"{off.sum()} of {off.size} outputs differ by more than one step"
    assert np.array_equal(ours.argmax(axis=1), reference.argmax(axis=1))


@pytest.mark.tvm
def test_digits_int8_islands_are_all_integer_and_recorded(built):
    folder, _, _ = built
    meta = json.loads((folder / "int8.effc" / "effc.json").read_text())
    islands = meta["integer_islands"]
    assert [i["op"] for i in islands] == ["conv2d"] * 3 + ["matmul"] * 2
    assert all(i["integer"] for i in islands), islands
    assert "requantize to uint8" in islands[0]["detail"]


@pytest.mark.tvm
def test_int8_weights_are_stored_int8_and_the_artifact_is_a_quarter(built):
    folder, _, _ = built
    int8 = np.load(folder / "int8.effc" / "params.npz")
    floats = np.load(folder / "float.effc" / "params.npz")
    int8_bytes = sum(int8[k].nbytes for k in int8.files)
    float_bytes = sum(floats[k].nbytes for k in floats.files)
    big = [int8[k] for k in int8.files if int8[k].size >= 64]
    assert big and all(a.dtype == np.int8 for a in big if a.ndim >= 2), [(a.dtype, a.shape) for a in big]
    assert int8_bytes < 0.3 * float_bytes, (int8_bytes, float_bytes)


def _integer_tasks(target_name: str, cpu: str | None = None, report: dict | None = None, quantized_for=None):
    """The fused PrimFuncs (the kernels effc schedules) of digits int8 for `target_name` (`cpu`), after the
    rewrite; `report` receives the rewrite's report; quantized_for: (target, cpu) the int8 pass ran for, if other."""
    import tvm

    from effc.backends.tvm.cpu import lowering
    from effc.backends.tvm.frontend import fold_constants, import_relax

    target = get_target(target_name, cpu)
    model = _int8_digits(*(quantized_for or (target_name, cpu)))
    mod, params = import_relax(fold_constants(model, dequantize_weights=False))
    mod, _, lowered = lowering.lower_integer(mod, params["main"], target)
    if report is not None:
        report.update(lowered)
    with target.tvm_target():
        mod = tvm.transform.Sequential(lowering.task_passes(target))(mod)
    return mod


def test_no_float_conv_or_matmul_remains_in_the_tir():
    """Every conv/matmul reduction block of the fused kernels accumulates in int32 (the same TIR walk records
    `kernel_arithmetic` for `effc profile`)."""
    from effc.backends.tvm.integer.report import kernel_arithmetic

    kinds = kernel_arithmetic(_integer_tasks("x86"))
    assert len(kinds) == 5 and set(kinds.values()) == {"integer"}, kinds


@pytest.mark.tvm
def test_a_matmul_of_two_activations_runs_integer_with_both_zero_points_and_onnxs_requantization():
    """Q(matmul(DQ(a), DQ(b))) of two activations (attention's Q.K^T and P.V): (a - za) @ (b - zb) in int32, then
    ONNX Runtime's requantization; bit for bit the QDQ graph's numbers (float products of small integers are
    exact), a second operand that is float stays float with its reason."""
    import tvm
    from tvm import relax

    from effc.backends.tvm.integer import lower_qdq

    def module(b_dtype: str):
        bb = relax.BlockBuilder()
        a = relax.Var("a", relax.TensorType((2, 3, 8), "uint8"))
        b = relax.Var("b", relax.TensorType((2, 8, 5), b_dtype))
        with bb.function("main", [a, b]):
            with bb.dataflow():
                fa = bb.emit(relax.op.dequantize(a, relax.const(np.float32(0.1)), relax.const(np.uint8(3))))
                fb = b if b_dtype == "float32" else bb.emit(
                    relax.op.dequantize(b, relax.const(np.float32(0.2)), relax.const(np.uint8(5))))
                product = bb.emit(relax.op.matmul(fa, fb))
                out = bb.emit_output(bb.emit(relax.op.quantize(product, relax.const(np.float32(0.35)),
                                                               relax.const(np.uint8(128)), out_dtype="uint8")))
            bb.emit_func_output(out)
        return bb.get()

    after, islands = lower_qdq(module("uint8"))
    assert [i.to_json() for i in islands] == [{"op": "matmul", "shape": "2x8x5", "integer": True,
                                               "detail": "requantize to uint8"}]
    calls = {c.op.name for c in _calls(after["main"]) if hasattr(c.op, "name")}
    assert "relax.dequantize" not in calls and "relax.quantize" not in calls
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 256, (2, 3, 8), dtype=np.uint8), rng.integers(0, 256, (2, 8, 5), dtype=np.uint8)
    machine = relax.VirtualMachine(tvm.compile(after, target="llvm"), tvm.cpu())
    ours = machine["main"](tvm.runtime.tensor(a), tvm.runtime.tensor(b)).numpy()
    acc = (a.astype(np.int64) - 3) @ (b.astype(np.int64) - 5)
    multiplier = np.float32(np.float32(0.1) * np.float32(0.2)) / np.float32(0.35)
    expected = np.clip(np.round(acc.astype(np.float32) * multiplier) + 128, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(ours, expected)

    kept, islands = lower_qdq(module("float32"))
    assert [i.to_json() for i in islands] == [{"op": "matmul", "shape": "2x8x5", "integer": False,
                                               "detail": "its weight is float (not dequantized from int8)"}]


def _calls(func) -> list:
    from tvm import relax

    found = []
    relax.analysis.post_order_visit(func.body, lambda node: found.append(node) if isinstance(node, relax.Call) else None)
    return found


def test_quantized_model_is_recognised():
    from effc.backends.tvm.backend import is_quantized

    assert not is_quantized(load_model(get("digits").onnx_path))
    assert is_quantized(_int8_digits("x86"))


@pytest.mark.tvm
def test_digits_int8_for_arm_runs_signed_integer_under_qemu_like_onnxruntime(tmp_path):
    """The arm record's int8 kernels are signed x signed: the int8 pass writes int8 activations, the rewrite keeps
    them; the generic core has no dotprod, so the convolutions run on NEON `smull` + `saddlp` (machine code); the
    artifact runs under qemu-aarch64 (two images: each run starts the emulator)."""
    z = get("digits")
    artifact = effc.compile(z.onnx_path, "arm", pipeline="int8", ctx=Context(calibration=CalibrationData.load(z.calib_path)),
                            out=tmp_path / "arm.effc", input_shapes={"input": SHAPE})
    quantized = artifact.passes.model
    assert {n.inputs[2].values.dtype for n in quantized.graph.nodes if n.op == "QuantizeLinear"} == {np.dtype(np.int8)}
    meta = json.loads((tmp_path / "arm.effc" / "effc.json").read_text())
    assert all(i["integer"] for i in meta["integer_islands"]) and "to int8" in meta["integer_islands"][0]["detail"]
    assert set(meta["kernel_arithmetic"].values()) == {"integer"}
    code = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(tmp_path / "arm.effc" / "model.so")],
                          capture_output=True, text=True, check=True).stdout
    assert "smull" in code and "saddlp" in code and "sdot" not in code
    step = _output_step(quantized)
    for image in np.load(z.eval_path)["input"][:2].astype(np.float32):
        ours = artifact(input=image[None])["logits"]
        reference = run_model(quantized, {"input": image[None]})["logits"]
        assert np.all(np.abs(ours - reference) <= step * 1.001) and ours.argmax() == reference.argmax()


@pytest.mark.tvm
def test_x86_int8_convolutions_run_vpdpbusd(built):
    """The host record has AVX-512 VNNI: the inner product of the convolutions and of the Gemms is `vpdpbusd`
    (checked in the library's machine code; objdump comes with the compilers the test command installs)."""
    folder, _, _ = built
    meta = json.loads((folder / "int8.effc" / "effc.json").read_text())
    if "avx512_vnni" not in meta["target"]["isa"]["int8_dot"]:
        pytest.skip("this host's CPU has no AVX-512 VNNI")
    code = subprocess.run(["objdump", "-d", str(folder / "int8.effc" / "model.so")], capture_output=True, text=True,
                          check=True).stdout
    assert "vpdpbusd" in code
    matmuls = [text for name, text in _machine_code_by_function(code).items() if "matmul" in name]
    assert matmuls and all("vpdpbusd" in text for text in matmuls)  # the Gemms too
    float_code = subprocess.run(["objdump", "-d", str(folder / "float.effc" / "model.so")], capture_output=True,
                                text=True, check=True).stdout
    assert "vpdpbusd" not in float_code


@pytest.mark.tvm
def test_inspect_artifact_lists_islands_and_kernels_say_integer(built):
    from click.testing import CliRunner

    from effc.cli import cli

    folder, _, _ = built
    meta = json.loads((folder / "int8.effc" / "effc.json").read_text())
    assert meta["kernel_arithmetic"] and set(meta["kernel_arithmetic"].values()) == {"integer"}
    result = CliRunner().invoke(cli, ["inspect", str(folder / "int8.effc"), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["float_islands"] == [] and len(info["integer_islands"]) == 5 and info["kernels"] == {"integer": 5}
    text = CliRunner().invoke(cli, ["inspect", str(folder / "float.effc")], catch_exceptions=False).output
    assert "runs in float" in text
    missing = CliRunner().invoke(cli, ["inspect", str(folder)])
    assert missing.exit_code == 2 and "not an effc artifact" in missing.output


@pytest.mark.tvm
def test_arm_dotprod_int8_convolutions_use_sdot_and_run_under_qemu_like_onnxruntime(tmp_path):
    """A cortex-a76 record has dotprod: the signed convolutions' inner product is `sdot` (machine code), their
    activations passed on in NCHW4c blocks; the artifact runs under qemu-aarch64 (one image) within one step of
    ORT."""
    z = get("digits")
    artifact = effc.compile(z.onnx_path, "arm", cpu="cortex-a76", pipeline="int8", out=tmp_path / "a76.effc",
                            ctx=Context(calibration=CalibrationData.load(z.calib_path)), input_shapes={"input": SHAPE})
    code = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(tmp_path / "a76.effc" / "model.so")],
                          capture_output=True, text=True, check=True).stdout
    assert "sdot" in code
    quantized, step = artifact.passes.model, _output_step(artifact.passes.model)
    image = np.load(z.eval_path)["input"][:1].astype(np.float32)
    ours, reference = artifact(input=image)["logits"], run_model(quantized, {"input": image})["logits"]
    assert np.all(np.abs(ours - reference) <= step * 1.001) and ours.argmax() == reference.argmax()


@pytest.mark.tvm
def test_arm_i8mm_int8_convolutions_use_smmla_and_run_under_qemu_like_onnxruntime(tmp_path):
    """A neoverse-n2 record has i8mm: digits' stride-1 convolutions (even output width) run `smmla`, 2 pixels x 2
    channels x 8 inputs per instruction, its Gemms (one row each) `sdot` (machine code); the artifact runs under
    qemu-aarch64 (whose default CPU has i8mm; one image) within one step of ORT."""
    z = get("digits")
    artifact = effc.compile(z.onnx_path, "arm", cpu="neoverse-n2", pipeline="int8", out=tmp_path / "n2.effc",
                            ctx=Context(calibration=CalibrationData.load(z.calib_path)), input_shapes={"input": SHAPE})
    code = subprocess.run(["aarch64-linux-gnu-objdump", "-d", str(tmp_path / "n2.effc" / "model.so")],
                          capture_output=True, text=True, check=True).stdout
    functions = _machine_code_by_function(code)
    convs = [text for name, text in functions.items() if "conv2d" in name]
    matmuls = [text for name, text in functions.items() if "matmul" in name]
    assert convs and all("sdot" not in text for text in convs) and "smmla" in code
    assert matmuls and all("sdot" in text for text in matmuls)  # the Gemms: dotprod's one-row dot, not smmla's pairs
    quantized, step = artifact.passes.model, _output_step(artifact.passes.model)
    image = np.load(z.eval_path)["input"][1:2].astype(np.float32)
    ours, reference = artifact(input=image)["logits"], run_model(quantized, {"input": image})["logits"]
    assert np.all(np.abs(ours - reference) <= step * 1.001) and ours.argmax() == reference.argmax()


def _machine_code_by_function(code: str) -> dict[str, str]:
    """objdump -d output -> {kernel symbol: its disassembly}, without the FFI wrappers (`__tvm_ffi_<kernel>`, which
    only unpack arguments and call `<kernel>_compute_`)."""
    import re

    parts = re.split(r"^[0-9a-f]+ <([^>]+)>:$", code, flags=re.M)
    return {name: text for name, text in zip(parts[1::2], parts[2::2]) if not name.startswith("__")}


@pytest.mark.tvm
def test_nchw_integer_depthwise_on_a_plane_7_wide_compiles_and_runs_under_qemu_like_onnxruntime(tmp_path):
    """i8mm targets keep NCHW activations, so depthwise convs take the NCHW integer kernel, whose row tile is the
    largest divisor of the width up to the lanes: 1 for MobileNetV2's 7x7 stage (its schedule crashed there)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3], group=16),
             helper.make_node("Relu", ["c"], ["y"])]
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (16, 1, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(0, 0.1, 16).astype(np.float32), "b")]
    graph = helper.make_graph(nodes, "dw7", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 7, 7])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 7, 7])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "dw7.onnx")
    calibration = CalibrationData({"x": rng.normal(0, 1, (8, 16, 7, 7)).astype(np.float32)})
    artifact = effc.compile(tmp_path / "dw7.onnx", "arm", cpu="neoverse-n2", pipeline="int8",
                            ctx=Context(calibration=calibration), out=tmp_path / "dw7.effc")
    assert [i["integer"] for i in artifact.meta["integer_islands"]] == [True]
    quantized, x = artifact.passes.model, rng.normal(0, 1, (1, 16, 7, 7)).astype(np.float32)
    ours, reference = artifact(x=x)["y"], run_model(quantized, {"x": x})["y"]
    assert np.all(np.abs(ours - reference) <= float(_output_step(quantized).max()) * 1.001)


def _mobile_block(tmp_path) -> str:
    """A MobileNet-style block as an ONNX file: depthwise 3x3 (16 channels) -> Clip(0, 6) -> pointwise 1x1 to 24 (not a whole
    number of 16-lane vectors)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (16, 1, 3, 3)).astype(np.float32), "dw"),
             numpy_helper.from_array(rng.normal(0, 0.1, 16).astype(np.float32), "dw_b"),
             numpy_helper.from_array(rng.normal(0, 0.3, (24, 16, 1, 1)).astype(np.float32), "pw"),
             numpy_helper.from_array(rng.normal(0, 0.1, 24).astype(np.float32), "pw_b"),
             numpy_helper.from_array(np.array(0, np.float32), "lo"), numpy_helper.from_array(np.array(6, np.float32), "hi")]
    nodes = [helper.make_node("Conv", ["x", "dw", "dw_b"], ["d"], "dw", group=16, pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             helper.make_node("Clip", ["d", "lo", "hi"], ["c"], "relu6"),
             helper.make_node("Conv", ["c", "pw", "pw_b"], ["y"], "pw", kernel_shape=[1, 1])]
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 14, 14])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 24, 14, 14])], inits)
    path = str(tmp_path / "block.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.tvm
def test_depthwise_clip_pointwise_run_integer_like_onnxruntime(tmp_path):
    path = _mobile_block(tmp_path)
    rng = np.random.default_rng(1)
    calibration = CalibrationData({"x": rng.normal(0, 1, (8, 1, 16, 14, 14)).astype(np.float32).reshape(8, 16, 14, 14)})
    artifact = effc.compile(path, "x86", pipeline="int8", ctx=Context(calibration=calibration), out=tmp_path / "b.effc")
    islands = artifact.meta["integer_islands"]
    assert [i["integer"] for i in islands] == [True, True], islands
    assert islands[0]["detail"].startswith("bias+clip")  # ReLU6 folded into the depthwise conv's requantization
    assert set(artifact.meta["kernel_arithmetic"].values()) == {"integer"}
    quantized = artifact.passes.model
    for x in rng.normal(0, 1, (3, 1, 16, 14, 14)).astype(np.float32):
        ours, reference = artifact(x=x)["y"], run_model(quantized, {"x": x})["y"]
        step = _output_step(quantized)
        step = step.reshape(1, -1, 1, 1) if step.size > 1 else step
        assert np.mean(np.abs(ours - reference) > step * 1.001) <= 0.001


@pytest.mark.tvm
def test_layers_kept_float_are_float_islands_with_their_reason(tmp_path):
    """int8(exclude=Gemm): the convolutions run integer, the two Gemms stay float, the artifact says why, and
    the outputs still equal ORT's on the mixed model."""
    z = get("digits")
    artifact = effc.compile(z.onnx_path, "x86", pipeline="int8(exclude=Gemm)", out=tmp_path / "mixed.effc",
                            ctx=Context(calibration=CalibrationData.load(z.calib_path)), input_shapes={"input": SHAPE})
    islands = artifact.meta["integer_islands"]
    assert [i["integer"] for i in islands] == [True, True, True, False, False]
    assert islands[-1]["detail"] == "its input is not dequantized from int8 (a float input)"
    assert sorted(artifact.meta["kernel_arithmetic"].values()) == ["float", "float", "integer", "integer", "integer"]
    x = np.load(z.eval_path)["input"][:1].astype(np.float32)
    np.testing.assert_allclose(artifact(input=x)["logits"], run_model(artifact.passes.model, {"input": x})["logits"],
                               rtol=0, atol=1e-4)


def test_convs_without_an_integer_kernel_for_the_isa_stay_float_islands():
    """sandybridge (AVX, no AVX2, no VNNI): no dot kernel fits, so the convs keep the float path (TVM's naive int32
    conv is far slower than float) and say why; the matmuls still run integer (checked in the TIR)."""
    from effc.backends.tvm.integer.report import kernel_arithmetic

    report: dict = {}
    kinds = kernel_arithmetic(_integer_tasks("x86", "sandybridge", report))
    islands = report["integer_islands"]
    assert [(i["op"], i["integer"]) for i in islands] == [("conv2d", False)] * 3 + [("matmul", True)] * 2, islands
    assert all(i["detail"] == "no integer kernel for x86_64 avx" for i in islands[:3]), islands
    assert sorted(kinds.values()) == ["float"] * 3 + ["integer"] * 2, kinds
    assert all(kind == "float" for name, kind in kinds.items() if "conv" in name), kinds


@pytest.mark.tvm
def test_digits_int8_for_x86_without_an_integer_conv_kernel_equals_onnxruntime(tmp_path):
    """The float islands of a CPU without an integer conv kernel still give ORT's outputs on the int8 model."""
    z = get("digits")
    artifact = effc.compile(z.onnx_path, "x86", cpu="sandybridge", pipeline="int8", out=tmp_path / "snb.effc",
                            ctx=Context(calibration=CalibrationData.load(z.calib_path)), input_shapes={"input": SHAPE})
    assert [i["integer"] for i in artifact.meta["integer_islands"]] == [False] * 3 + [True] * 2
    quantized, step = artifact.passes.model, _output_step(artifact.passes.model)
    for image in np.load(z.eval_path)["input"][:8].astype(np.float32):
        ours, reference = artifact(input=image[None])["logits"], run_model(quantized, {"input": image[None]})["logits"]
        assert np.all(np.abs(ours - reference) <= step * 1.001) and ours.argmax() == reference.argmax()


def test_x86_without_vnni_convs_run_integer_on_pmaddubsw():
    """haswell (AVX2, no VNNI): the int8 pass keeps weights to 7 bits, so the pmaddubsw kernel is exact and every
    conv and matmul accumulates in int32 (TIR)."""
    from effc.backends.tvm.integer.report import kernel_arithmetic

    assert get_target("x86", "haswell").isa.int8_weight_bits == 7
    report: dict = {}
    kinds = kernel_arithmetic(_integer_tasks("x86", "haswell", report))
    assert all(i["integer"] for i in report["integer_islands"]), report
    assert len(kinds) == 5 and set(kinds.values()) == {"integer"}, kinds


def test_8_bit_weights_on_pmaddubsw_stay_float_rather_than_saturate():
    """A model quantized for a VNNI CPU (8-bit weights) compiled for haswell: pmaddubsw's int16 pair sums could
    saturate, so those convs stay float and say so."""
    report: dict = {}
    _integer_tasks("x86", "haswell", report, quantized_for=("x86", "icelake-server"))
    convs = [i for i in report["integer_islands"] if i["op"] == "conv2d"]
    big = [i for i in convs if not i["integer"]]
    assert big, convs
    assert all("would saturate `pmaddubsw`" in i["detail"] for i in big), convs


@pytest.mark.tvm
@pytest.mark.parametrize("cpu, instructions, absent", [("haswell", ["vpmaddubsw", "vpmaddwd"], "vpdpbusd"),
                                                       ("alderlake", ["{vex} vpdpbusd"], "zmm")])
def test_digits_int8_on_x86_without_avx512_vnni_runs_its_dot_kernel_like_onnxruntime(tmp_path, cpu, instructions, absent):
    """haswell (AVX2): pmaddubsw + pmaddwd; alderlake (AVX-VNNI, no AVX-512): the VEX vpdpbusd on ymm registers."""
    from effc.targets.cpu import host_x86_features

    needed = set(get_target("x86", cpu).isa.features)
    if not needed <= set(host_x86_features()):
        pytest.skip(f"this host lacks {sorted(needed - set(host_x86_features()))}")
    z = get("digits")
    artifact = effc.compile(z.onnx_path, "x86", cpu=cpu, pipeline="int8", out=tmp_path / "x.effc",
                            ctx=Context(calibration=CalibrationData.load(z.calib_path)), input_shapes={"input": SHAPE})
    assert set(artifact.meta["kernel_arithmetic"].values()) == {"integer"}
    code = subprocess.run(["objdump", "-d", str(tmp_path / "x.effc" / "model.so")], capture_output=True, text=True,
                          check=True).stdout
    assert all(i in code for i in instructions) and absent not in code
    quantized, step = artifact.passes.model, _output_step(artifact.passes.model)
    x = np.load(z.eval_path)["input"][:16].astype(np.float32)
    ours = np.concatenate([artifact(input=x[i:i + 1])["logits"] for i in range(len(x))])
    reference = np.concatenate([run_model(quantized, {"input": x[i:i + 1]})["logits"] for i in range(len(x))])
    assert np.mean(np.abs(ours - reference) > step[None, :] * 1.001) <= 0.001
    assert np.array_equal(ours.argmax(axis=1), reference.argmax(axis=1))


def _kernel_calls(mod) -> list[tuple]:
    """(output var, PrimFunc, its block names, argument vars) of each call_tir in `main`, in order."""
    from tvm import relax, s_tir

    calls = []
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if not isinstance(value, relax.Call) or getattr(value.op, "name", None) != "relax.call_tir":
                continue
            func = mod[value.args[0]]
            sch = s_tir.Schedule(func)  # unscheduled: every block is a child of the root
            names = [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]
            calls.append((binding.var, func, names, list(value.args[1].fields)))
    return calls


def test_activations_stay_blocked_between_consecutive_integer_convs():
    """digits for x86: the integer ops (three convs, the max pool, the residual add fused into the last conv) pass
    NCHW16c uint8 blocks to one another: no layout transform between two of them, one pack at the island's entry
    (inside the first conv), one unpack at its exit (before the Gemm's flatten); checked in the fused TIR."""
    from effc.backends.tvm.integer import blocked, dot

    calls = _kernel_calls(_integer_tasks("x86"))
    convs = [c for c in calls if any(n.startswith(dot.BLOCKED_CONV_BLOCK) for n in c[2])]
    assert len(convs) == 3, [c[2] for c in calls]
    producer = {str(var.name): names for var, _, names, _ in calls}
    assert len(convs[0][3][0].ty.shape.values) == 4  # the quantized input, NCHW: packed inside the first conv
    for _, _, _, args in convs[1:]:
        data = args[0]
        assert [int(d) for d in data.ty.shape.values][-1] == 16, data.ty  # blocks of 16 channels
        assert not any(n.startswith((blocked.UNPACK_BLOCK, dot.UNPACK_BLOCK)) for n in producer[str(data.name)])
    unpacks = [c for c in calls if any(n.startswith(blocked.UNPACK_BLOCK) for n in c[2])]
    assert len(unpacks) == 1 and unpacks[0][3][0].same_as(convs[-1][0]), [c[2] for c in unpacks]
    assert any(n.startswith("pool_max") for c in calls for n in c[2] if len(c[3][0].ty.shape.values) == 5)


def _residual_block(tmp_path) -> str:
    """A MobileNetV2-style residual block as an ONNX file, 24 channels (one and a half blocks of 16): pointwise
    16->24 + ReLU, 3x3 max pool, depthwise 3x3 + Clip(0, 6), pointwise 24->24, added to the max pool's output."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (24, 16, 1, 1)).astype(np.float32), "pw1"),
             numpy_helper.from_array(rng.normal(0, 0.1, 24).astype(np.float32), "pw1_b"),
             numpy_helper.from_array(rng.normal(0, 0.5, (24, 1, 3, 3)).astype(np.float32), "dw"),
             numpy_helper.from_array(rng.normal(0, 0.1, 24).astype(np.float32), "dw_b"),
             numpy_helper.from_array(rng.normal(0, 0.3, (24, 24, 1, 1)).astype(np.float32), "pw2"),
             numpy_helper.from_array(rng.normal(0, 0.1, 24).astype(np.float32), "pw2_b"),
             numpy_helper.from_array(np.array(0, np.float32), "lo"), numpy_helper.from_array(np.array(6, np.float32), "hi")]
    nodes = [helper.make_node("Conv", ["x", "pw1", "pw1_b"], ["a"], "pw1", kernel_shape=[1, 1]),
             helper.make_node("Relu", ["a"], ["r"], "relu"),
             helper.make_node("MaxPool", ["r"], ["m"], "pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["m", "dw", "dw_b"], ["d"], "dw", group=24, pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             helper.make_node("Clip", ["d", "lo", "hi"], ["c"], "relu6"),
             helper.make_node("Conv", ["c", "pw2", "pw2_b"], ["p"], "pw2", kernel_shape=[1, 1]),
             helper.make_node("Add", ["p", "m"], ["y"], "residual")]
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 14, 14])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 24, 14, 14])], inits)
    path = str(tmp_path / "residual.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.tvm
def test_blocked_depthwise_pool_and_residual_with_partial_blocks_equal_onnxruntime(tmp_path):
    """24 channels in blocks of 16 (the last block half used) through a blocked pointwise conv, max pool,
    depthwise conv and residual add: every conv integer, outputs within one step of ORT on the int8 model."""
    path = _residual_block(tmp_path)
    rng = np.random.default_rng(3)
    calibration = CalibrationData({"x": rng.normal(0, 1, (8, 16, 14, 14)).astype(np.float32)})
    artifact = effc.compile(path, "x86", pipeline="int8", ctx=Context(calibration=calibration), out=tmp_path / "r.effc")
    assert [i["integer"] for i in artifact.meta["integer_islands"]] == [True] * 3, artifact.meta["integer_islands"]
    assert set(artifact.meta["kernel_arithmetic"].values()) == {"integer"}
    quantized = artifact.passes.model
    step = float(_output_step(quantized).max())
    for x in rng.normal(0, 1, (3, 1, 16, 14, 14)).astype(np.float32):
        ours, reference = artifact(x=x)["y"], run_model(quantized, {"x": x})["y"]
        assert np.mean(np.abs(ours - reference) > step * 1.001) <= 0.001, np.abs(ours - reference).max() / step


def _layer_norm_steps(model, feeds) -> np.ndarray:
    """One quantization step of a LayerNorm output's input, as it moves the output: s * |gamma| / std of the row,
    per output element; the LayerNorm's dequantized input read from ORT (added to a copy as a graph output)."""
    norm = next(n for n in model.graph.nodes if any(t is model.graph.outputs[0] for t in n.outputs))
    dq = norm.inputs[0].inputs[0]
    assert norm.op == "LayerNormalization" and dq.op == "DequantizeLinear"
    probe = model.copy()
    probe.graph.outputs += next(n for n in probe.graph.nodes if n.name == norm.name).inputs[:2]  # input, gamma
    values = run_model(probe, feeds)
    x, gamma = values[norm.inputs[0].name], np.abs(values[norm.inputs[1].name])
    return float(np.max(dq.inputs[1].values)) * gamma / np.sqrt(x.var(axis=-1, keepdims=True) + 1e-5)


@pytest.mark.tvm
@pytest.mark.zoo
def test_encoder_int8_on_x86_equals_onnxruntime_within_one_step(tmp_path):
    """The zoo's small transformer encoder (its output a LayerNorm of a quantized residual): integer matmuls on
    x86, the attention's products of two activations too; its outputs within what one step of that residual moves
    them, on at most 0.1% of outputs, against ORT running effc's int8 model as written (graph optimizations off:
    the QDQ semantics). ORT's optimized session fuses the QDQ pairs into its own integer kernels, whose float
    epilogues round differently (up to ~2 steps on <1% of outputs with GPTQ-rounded weights): against it, no more
    outputs beyond one step than ORT's own two sessions disagree on, and the same argmax per token."""
    z = get("encoder")
    artifact = effc.compile(z.onnx_path, "x86", pipeline="int8", ctx=Context(calibration=CalibrationData.load(z.calib_path)),
                            out=tmp_path / "enc.effc", input_shapes={"input_ids": [1, 16]})
    islands = artifact.meta["integer_islands"]
    kept_float = [i for i in islands if not i["integer"]]
    assert not kept_float and len(islands) == 16
    code = subprocess.run(["objdump", "-d", str(tmp_path / "enc.effc" / "model.so")], capture_output=True, text=True,
                          check=True).stdout
    if "avx512_vnni" in artifact.meta["target"]["isa"]["int8_dot"]:
        assert "vpdpbusd" in code  # no convolutions here: the weight matmuls' inner product
    quantized = artifact.passes.model
    as_written = ort_session(quantized, optimize=False)
    for ids in np.load(z.eval_path)["input_ids"][:8]:
        feeds = {"input_ids": ids[None]}
        ours, optimized = artifact(**feeds)["hidden"], run_model(quantized, feeds)["hidden"]
        reference = run_session(as_written, feeds)["hidden"]
        step = _layer_norm_steps(quantized, feeds) * 1.001
        off = np.abs(ours - reference) > step
        assert off.mean() <= 0.001, f"{off.sum()} of {off.size} outputs differ by more than one step"
        assert np.sum(np.abs(ours - optimized) > step) <= np.sum(np.abs(reference - optimized) > step) + off.size // 1000
        assert np.array_equal(ours.argmax(-1), optimized.argmax(-1))


@pytest.mark.parametrize("target, cpu, intrinsic", [("x86", "icelake-server", "llvm.x86.avx512.vpdpbusd.512"),
                                                    ("x86", "haswell", "llvm.x86.avx2.pmadd.ub.sw"),
                                                    ("arm", "cortex-a76", "llvm.aarch64.neon.sdot"),
                                                    ("arm", None, "llvm.aarch64.neon.smull")])
def test_digits_gemms_run_on_the_dot_instruction_of_the_isa(target, cpu, intrinsic):
    """Both Gemms of digits (64 -> 10 with a float output, 512 -> 64 requantized) become integer.dense kernels over
    weights packed [N/lanes, K/4, lanes, 4], scheduled by `int8-dot-matmul` with the convolutions' intrinsic and
    their epilogue fused (checked in the scheduled TIR)."""
    from tvm import s_tir

    from effc.backends.tvm.cpu.rules import choose_schedule
    from effc.backends.tvm.integer import dense

    mod = _integer_tasks(target, cpu)
    isa = get_target(target, cpu).isa
    matmuls = [f for g, f in mod.functions_items() if "matmul" in g.name_hint]
    assert len(matmuls) == 2, [g.name_hint for g, _ in mod.functions_items()]
    for func in matmuls:
        unscheduled = s_tir.Schedule(func)
        product = next(b for b in unscheduled.get_child_blocks(unscheduled.get_sblock("root"))
                       if unscheduled.get(b).name_hint.startswith(dense.DENSE_BLOCK))
        weights = [r.source for r in unscheduled.get(product).reads if str(r.source.dtype) == "int8"][-1:]
        assert [len(w.shape) for w in weights] == [4]
        rule, sch = choose_schedule(func, isa)
        script = sch.mod.script()
        assert rule == "int8-dot-matmul" and intrinsic in script, (rule, script[:2000])
        assert dense.UNPACK_BLOCK in script and not any(f'sblock("{b}' in script for b in ("compute", "T_"))  # epilogue fused


def _two_gemms(tmp_path) -> str:
    """Gemm 30 -> 20 (K no multiple of 4), Relu, Gemm 20 -> 5 (N less than a vector), as an ONNX file, 3 rows."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (20, 30)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(0, 0.1, 20).astype(np.float32), "b1"),
             numpy_helper.from_array(rng.normal(0, 0.3, (5, 20)).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.normal(0, 0.1, 5).astype(np.float32), "b2")]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], "fc1", transB=1),
             helper.make_node("Relu", ["h"], ["r"], "relu"),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], "fc2", transB=1)]
    graph = helper.make_graph(nodes, "gemms", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 30])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5])], inits)
    path = str(tmp_path / "gemms.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.tvm
def test_gemms_with_padded_inputs_and_outputs_equal_onnxruntime(tmp_path):
    """K = 30 (activations padded to 32 inside the kernel, zero weights there) and N = 5 (one partial vector): the
    dot-product matmuls give ORT's outputs on the int8 model within one step."""
    rng = np.random.default_rng(5)
    calibration = CalibrationData({"x": rng.normal(0, 1, (8, 3, 30)).astype(np.float32)})
    artifact = effc.compile(_two_gemms(tmp_path), "x86", pipeline="int8", ctx=Context(calibration=calibration),
                            out=tmp_path / "g.effc")
    assert [i["integer"] for i in artifact.meta["integer_islands"]] == [True, True], artifact.meta["integer_islands"]
    quantized, step = artifact.passes.model, _output_step(artifact.passes.model)
    for x in rng.normal(0, 1, (4, 3, 30)).astype(np.float32):
        ours, reference = artifact(x=x)["y"], run_model(quantized, {"x": x})["y"]
        assert np.all(np.abs(ours - reference) <= step[None, :] * 1.001), np.abs(ours - reference) / step



@pytest.mark.tvm
@pytest.mark.zoo
@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2"])
def test_zoo_cnn_int8_on_x86_runs_integer_and_equals_onnxruntime_within_one_step(tmp_path, name):
    """ResNet-18 and MobileNetV2 quantized by effc's int8 for x86: every conv and the Gemm integer (islands, and
    every fused kernel's reduction in int32 in the compiled TIR), and on 8 eval images no more than 0.1% of outputs
    more than one step from ORT on the int8 model, the same top-1."""
    z = get(name)
    artifact = effc.compile(z.onnx_path, "x86", pipeline="int8", ctx=Context(calibration=CalibrationData.load(z.calib_path)),
                            out=tmp_path / f"{name}.effc", input_shapes={"input": [1, 3, 224, 224]})
    islands = artifact.meta["integer_islands"]
    assert islands and all(i["integer"] for i in islands), [i for i in islands if not i["integer"]]
    assert set(artifact.meta["kernel_arithmetic"].values()) == {"integer"}
    quantized = artifact.passes.model
    step = _output_step(quantized)
    for image in np.load(z.eval_path)["input"][:8]:
        feeds = {"input": image[None]}
        ours, reference = artifact(**feeds)["logits"], run_model(quantized, feeds)["logits"]
        off = np.abs(ours - reference) > step * 1.001
        assert off.mean() <= 0.001, f"{off.sum()} of {off.size} outputs differ by more than one step"
        assert ours.argmax() == reference.argmax()


@pytest.mark.tvm
@pytest.mark.zoo
@pytest.mark.slow
@pytest.mark.parametrize("name, cpu", [("resnet18", "cortex-a76"), ("mobilenetv2", "neoverse-n2")])
def test_zoo_cnn_int8_for_arm_equals_the_integer_reference_under_qemu(tmp_path, name, cpu):
    """ResNet-18 (dotprod) and MobileNetV2 (i8mm) int8 for arm, run under qemu-aarch64 (one image): within one step
    of ORT on the model's uint8 twin (onnx_runtime.uint8_activation_twin), which ORT runs entirely as integer
    kernels, on at most 0.1% of outputs, the same top-1. (ORT's own session of the int8-activation model is not
    that reference: it runs MobileNetV2's depthwise convs as float, 6.6% of the output scale away.)"""
    from effc.onnx_runtime import uint8_activation_twin

    z = get(name)
    artifact = effc.compile(z.onnx_path, "arm", cpu=cpu, pipeline="int8", ctx=Context(calibration=CalibrationData.load(z.calib_path)),
                            out=tmp_path / f"{name}.effc", input_shapes={"input": [1, 3, 224, 224]})
    assert all(i["integer"] for i in artifact.meta["integer_islands"])
    quantized = artifact.passes.model
    image = np.load(z.eval_path)["input"][:1]
    ours = artifact(input=image)["logits"]
    reference = run_model(uint8_activation_twin(quantized), {"input": image})["logits"]
    off = np.abs(ours - reference) > _output_step(quantized) * 1.001
    assert off.mean() <= 0.001, f"{off.sum()} of {off.size} outputs differ by more than one step"
    assert ours.argmax() == reference.argmax()


def test_the_uint8_twin_of_an_int8_activation_model_gives_the_same_numbers_on_onnxruntime():
    """digits quantized for arm (int8 activations): its uint8 twin runs to the same logits on ORT (the twin is only
    a change of zero points)."""
    from effc.onnx_runtime import uint8_activation_twin

    quantized = _int8_digits("arm")
    x = np.load(get("digits").eval_path)["input"][:1].astype(np.float32)
    twin = uint8_activation_twin(quantized)
    assert {n.inputs[2].values.dtype for n in twin.graph.nodes if n.op == "QuantizeLinear"} == {np.dtype(np.uint8)}
    np.testing.assert_allclose(run_model(twin, {"input": x})["logits"], run_model(quantized, {"input": x})["logits"], atol=1e-6)
