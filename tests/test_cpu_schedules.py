"""The default CPU schedules: which rule claims which kernel, for x86 (AVX-512 or AVX2) and arm (NEON), and that each
rule's kernel computes what TVM's unscheduled kernel computes. End-to-end agreement with ONNX Runtime on every zoo
model, x86 here and arm under qemu, is in test_compile_zoo.py."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import effc
from effc.backends.tvm_support import fold_constants
from models.zoo import get

SHAPES = {"digits": {"input": [1, 1, 8, 8]}, "resnet18": {"input": [1, 3, 224, 224]},
          "mobilenetv2": {"input": [1, 3, 224, 224]}, "encoder": {"input_ids": [1, 16]}}
X86 = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "skylake-avx512"}
ARM = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}


def fused_functions(name: str, target_dict: dict):
    """(target, {function name: PrimFunc}) of a zoo model after effc's legalization, weight pre-packing and fusion."""
    import tvm

    from effc.backends.tvm_backend import import_relax
    from effc.backends.tvm_schedules import fuse_passes, prepack_weights

    target = tvm.target.Target(target_dict)
    model = effc.optimize(effc.load_model(get(name).onnx_path, SHAPES[name]), "default", effc.Context()).model
    mod, params = import_relax(fold_constants(model))
    mod, _ = prepack_weights(mod, params.get("main", []), target)
    with target:
        mod = tvm.transform.Sequential(fuse_passes())(mod)
    return target, {gvar.name_hint: func for gvar, func in mod.functions_items() if isinstance(func, tvm.tirx.PrimFunc)}


def rules_by_function(name: str, target_dict: dict) -> dict[str, str]:
    from effc.backends.cpu_schedule_rules import choose_schedule

    target, functions = fused_functions(name, target_dict)
    return {fname: choose_schedule(func, target)[0] for fname, func in functions.items()}


@pytest.mark.tvm
@pytest.mark.parametrize("target", [X86, ARM], ids=["x86", "arm"])
def test_every_resnet_convolution_gets_a_register_tiled_schedule(target):
    rules = rules_by_function("resnet18", target)
    convs = {f: r for f, r in rules.items() if "conv2d" in f}
    assert len(convs) >= 10
    assert set(convs.values()) == {"packed-conv"}, convs
    assert rules[next(f for f in rules if f.startswith("fused_matmul"))] == "matmul"
    assert None not in rules.values()


@pytest.mark.tvm
def test_mobilenet_depthwise_and_encoder_matmuls_have_their_rules():
    mobilenet = rules_by_function("mobilenetv2", X86)
    depthwise = [r for f, r in mobilenet.items() if f.startswith("fused_conv2d")]  # TVM's group conv, not effc's
    assert depthwise and set(depthwise) == {"grouped-conv"}
    rules = Counter(mobilenet.values())
    # every distinct dense conv: the 1x1 ones on planes of whole vectors (112x112 to 28x28 at 16 lanes) over the plane
    assert rules["pointwise-conv"] == 8 and rules["packed-conv"] >= 7, rules
    encoder = rules_by_function("encoder", X86)
    matmuls = [r for f, r in encoder.items() if "matmul" in f]
    assert len(matmuls) >= 5 and set(matmuls) == {"matmul"}


@pytest.mark.tvm
@pytest.mark.parametrize("rule_name,function,host", [
    ("packed-conv", None, False), ("grouped-conv", None, False), ("matmul", None, False), ("generic", None, False),
    ("pointwise-conv", None, False),
    # this machine's SIMD width: 24 output channels in 8-lane vectors (AVX-512), the classifier's widened GEMV tile
    ("packed-conv", "fused_effc_conv2d13_add16_maximum8_minimum8", True), ("matmul", "fused_matmul_add24", True),
    # a 1x1 conv with a residual add on 56x56 planes, the 112x112 expansion that chunks its plane
    ("pointwise-conv", "fused_effc_conv2d5_add4_add6", True),
    ("pointwise-conv", "fused_effc_conv2d2_add2_maximum1_minimum1", True),
    # a stride-2 depthwise conv (unrolled rows), the global average pool (a reduction under the generic rule)
    ("grouped-conv", "fused_conv2d1_add3_maximum2_minimum2", True), ("generic", "mean", True)])
def test_each_rule_computes_what_the_unscheduled_kernel_computes(rule_name, function, host):
    """Build one function per rule twice, scheduled and as TVM's naive loops, and compare on random data."""
    import tvm

    from effc.backends.cpu_schedule_rules import RULES
    from effc.backends.targets import get_target

    rule = dict(RULES)[rule_name]
    target, functions = fused_functions("mobilenetv2", get_target("x86").tvm if host else {"kind": "llvm"})
    from effc.backends.cpu_schedule_rules import vector_lanes, vector_registers

    for fname, func in sorted(functions.items()):
        if function and fname != function:
            continue
        sch = tvm.s_tir.Schedule(func)
        try:
            rule(sch, vector_lanes(target), vector_registers(target))
        except Exception:
            continue
        break
    else:
        pytest.fail(f"no MobileNetV2 function fits {rule_name}")
    rng = np.random.default_rng(0)
    args = [rng.standard_normal([int(d) for d in p.shape]).astype(str(p.dtype)) for p in func.params]
    results = []
    for candidate in (func, sch.mod["main"]):
        lib = tvm.compile(tvm.IRModule({"main": candidate.with_attr("global_symbol", "main")}), target=target).jit()
        tensors = [tvm.runtime.tensor(a) for a in args]
        lib["main"](*tensors)
        results.append(tensors[-1].numpy())
    np.testing.assert_allclose(results[1], results[0], rtol=1e-4, atol=1e-4 * float(np.abs(results[0]).max()))


@pytest.mark.tvm
@pytest.mark.parametrize("tail", ["Transpose", "Flatten", "Sigmoid"])
@pytest.mark.parametrize("kernel", ["3x3", "1x1"])
def test_conv_followed_by_layout_ops_compiles_to_the_same_numbers(tmp_path, monkeypatch, tail, kernel):
    """An elementwise tail is folded into the conv's tiles; layout ops stay kernels of their own (FuseOps does not
    fuse them after a conv) with the generic schedule. The 3x3 conv: odd column counts and a partial pad on purpose,
    24 output channels (three 8-lane vectors on AVX-512); the 1x1 conv runs over its flattened 16x16 plane."""
    from onnx import helper

    from conftest import FLOAT, make_model
    from effc.artifact import compile_artifact, load_artifact
    from effc.backends.targets import get_target
    from effc.backends import cpu_schedule_rules
    from effc.runtime import run_model

    chosen, choose = [], cpu_schedule_rules.choose_schedule
    monkeypatch.setattr(cpu_schedule_rules, "choose_schedule", lambda *a: chosen.append(choose(*a)[0]) or choose(*a))
    rng = np.random.default_rng(0)
    attrs = {"perm": [0, 2, 3, 1]} if tail == "Transpose" else {}
    shape, size, pads = ([1, 5, 9, 11], 3, [1, 1, 1, 1]) if kernel == "3x3" else ([1, 5, 16, 16], 1, [0, 0, 0, 0])
    proto = make_model(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=pads, name="conv"),
         helper.make_node(tail, ["c"], ["y"], name="tail", **attrs)],
        [("x", FLOAT, shape)], [("y", FLOAT, None)],
        {"w": rng.standard_normal((24, 5, size, size)).astype(np.float32),
         "b": rng.standard_normal(24).astype(np.float32)})
    model = effc.load_model(proto)
    compile_artifact(model, get_target("x86"), tmp_path / "a.effc")
    assert ("pointwise-conv" if kernel == "1x1" else "packed-conv") in chosen, chosen
    x = rng.standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(load_artifact(tmp_path / "a.effc")(x=x)["y"], run_model(model, {"x": x})["y"],
                               rtol=1e-4, atol=1e-4)
