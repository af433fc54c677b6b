"""The default CPU schedules: which rule claims which kernel, for x86 (AVX-512 or AVX2) and arm (NEON), and that each
rule's kernel computes what TVM's unscheduled kernel computes. End-to-end agreement with ONNX Runtime on every zoo
model, x86 here and arm under qemu, is in test_compile_zoo.py."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from onnx import helper

import effc
from effc.backends.tvm.frontend import fold_constants
from effc.targets import Target, get_target
from effc.targets.cpu import x86_isa
from effc.zoo import get
from tests.conftest import FLOAT, make_model

SHAPES = {"digits": {"input": [1, 1, 8, 8]}, "resnet18": {"input": [1, 3, 224, 224]},
          "mobilenetv2": {"input": [1, 3, 224, 224]}, "encoder": {"input_ids": [1, 16]}}
# records for an AVX-512 x86 CPU and a NEON core, whatever this machine is; GENERIC is x86-64 with SSE2 only
X86 = Target("x86", "tvm", "x86_64", lowering="cpu", cpu="skylake-avx512",
             tvm={"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "skylake-avx512"},
             isa=x86_isa(("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl")))
ARM = get_target("arm")
GENERIC = Target("x86-generic", "tvm", "x86_64", lowering="cpu", tvm={"kind": "llvm"}, isa=x86_isa(()))


def odd_channel_model():
    """Convolutions whose channel counts (5, 6, 7) no SIMD block divides, so they stay NCHW: a 3x3 conv, a 1x1 conv
    on a 16x16 plane, a grouped conv and a strided depthwise conv."""
    rng = np.random.default_rng(0)
    weights = {"w3": (6, 5, 3, 3), "w1": (6, 6, 1, 1), "wg": (6, 2, 3, 3), "wd": (6, 1, 3, 3), "wo": (7, 6, 1, 1)}
    return make_model(
        [helper.make_node("Conv", ["x", "w3"], ["a"], pads=[1, 1, 1, 1], name="conv3x3"),
         helper.make_node("Relu", ["a"], ["ar"]),
         helper.make_node("Conv", ["ar", "w1"], ["b"], name="conv1x1"),
         helper.make_node("Conv", ["b", "wg"], ["c"], pads=[1, 1, 1, 1], group=3, name="grouped"),
         helper.make_node("Conv", ["c", "wd"], ["d"], pads=[1, 1, 1, 1], strides=[2, 2], group=6, name="depthwise"),
         helper.make_node("Conv", ["d", "wo"], ["y"], name="out")],
        [("x", FLOAT, [1, 5, 16, 16])], [("y", FLOAT, None)],
        {name: rng.standard_normal(shape).astype(np.float32) for name, shape in weights.items()})


def fused_functions(model_or_name, target: Target) -> dict:
    """{function name: PrimFunc} of a zoo model (by name) or a model after effc's layout conversion, legalization,
    weight pre-packing and fusion for `target` (a record)."""
    import tvm

    from effc.backends.tvm.cpu.lowering import fuse_passes, prepare
    from effc.backends.tvm.frontend import import_relax

    if isinstance(model_or_name, str):
        model = effc.load_model(get(model_or_name).onnx_path, SHAPES[model_or_name])
    else:
        model = effc.load_model(model_or_name)
    model = effc.optimize(model, "default", effc.Context()).model
    mod, params = import_relax(fold_constants(model))
    mod, _ = prepare(mod, params.get("main", []), target)
    with target.tvm_target():
        mod = tvm.transform.Sequential(fuse_passes())(mod)
    return {gvar.name_hint: func for gvar, func in mod.functions_items() if isinstance(func, tvm.tirx.PrimFunc)}


def rules_by_function(model_or_name, target: Target) -> dict[str, str]:
    from effc.backends.tvm.cpu.rules import choose_schedule

    functions = fused_functions(model_or_name, target)
    return {fname: choose_schedule(func, target.isa)[0] for fname, func in functions.items()}


@pytest.mark.tvm
@pytest.mark.zoo
@pytest.mark.parametrize("target", [X86, ARM], ids=["x86", "arm"])
def test_every_resnet_convolution_runs_blocked_with_a_register_tiled_schedule(target):
    rules = rules_by_function("resnet18", target)
    convs = {f: r for f, r in rules.items() if "conv2d" in f}
    assert len(convs) >= 10
    # the first conv too: it reads the NCHW image (3 channels) and writes channel blocks
    assert set(convs.values()) == {"blocked-conv"}, convs
    assert rules[next(f for f in rules if f.startswith("fused_matmul"))] == "matmul"
    assert None not in rules.values()


@pytest.mark.tvm
@pytest.mark.zoo
def test_mobilenet_converts_to_blocks_once_and_encoder_matmuls_have_their_rule():
    mobilenet = rules_by_function("mobilenetv2", X86)
    rules = Counter(mobilenet.values())
    # 17 depthwise convs fused into 10 distinct kernels, the dense ones (1x1 and the first layer) into 19
    assert rules["blocked-depthwise"] >= 8 and rules["blocked-conv"] >= 15, rules
    assert not {"packed-conv", "pointwise-conv", "grouped-conv"} & set(rules), rules
    # no layout transform between convolutions: Clip (maximum/minimum) and the residual adds stay blocked
    transforms = [f for f in mobilenet if "layout_transform" in f]
    assert len(transforms) <= 1, transforms
    encoder = rules_by_function("encoder", X86)
    matmuls = [r for f, r in encoder.items() if "matmul" in f]
    assert len(matmuls) >= 5 and set(matmuls) == {"matmul"}


@pytest.mark.tvm
def test_convolutions_no_block_divides_keep_their_nchw_rules():
    rules = Counter(rules_by_function(odd_channel_model(), X86).values())
    assert rules["packed-conv"] >= 1 and rules["pointwise-conv"] >= 1 and rules["grouped-conv"] >= 2, rules
    assert "blocked-conv" not in rules and None not in rules


MOBILENET = pytest.mark.zoo


@pytest.mark.tvm
@pytest.mark.parametrize("source,rule_name,function,host", [
    pytest.param("mobilenetv2", "blocked-conv", None, False, marks=MOBILENET),
    pytest.param("mobilenetv2", "blocked-depthwise", None, False, marks=MOBILENET),
    pytest.param("mobilenetv2", "matmul", None, False, marks=MOBILENET),
    pytest.param("mobilenetv2", "generic", None, False, marks=MOBILENET),
    ("odd", "packed-conv", None, False), ("odd", "pointwise-conv", None, False), ("odd", "grouped-conv", None, False),
    # this machine's SIMD width: 24 output channels as 8-lane blocks (AVX-512), the first layer reading NCHW, a
    # 7x7 expansion, a projection with its residual add, a stride-2 depthwise conv, the classifier's GEMV tile
    pytest.param("mobilenetv2", "blocked-conv", "fused_effc_conv2d5_add4", True, marks=MOBILENET),
    pytest.param("mobilenetv2", "blocked-conv", "fused_effc_conv2d_add_maximum_minimum", True, marks=MOBILENET),
    pytest.param("mobilenetv2", "blocked-conv", "fused_effc_conv2d25_add20_maximum10_minimum10", True, marks=MOBILENET),
    pytest.param("mobilenetv2", "blocked-conv", "fused_effc_conv2d8_add4_add6", True, marks=MOBILENET),
    pytest.param("mobilenetv2", "blocked-depthwise", "fused_effc_conv2d4_add3_maximum2_minimum2", True, marks=MOBILENET),
    pytest.param("mobilenetv2", "matmul", "fused_matmul_add24", True, marks=MOBILENET),
    ("odd", "grouped-conv", None, True), ("odd", "packed-conv", None, True)])
def test_each_rule_computes_what_the_unscheduled_kernel_computes(source, rule_name, function, host):
    """Build one function per rule twice, scheduled and as TVM's naive loops, and compare on random data."""
    import tvm

    from effc.backends.tvm.cpu.rules import RULES, CPURule

    target = get_target("x86") if host else GENERIC
    rule = CPURule(rule_name, dict(RULES)[rule_name], target.isa)
    model = odd_channel_model() if source == "odd" else source
    functions = fused_functions(model, target)
    for fname, func in sorted(functions.items()):
        if function and fname != function:
            continue
        sch = rule.apply(func, None, False)
        if sch is not None:
            break
    else:
        pytest.fail(f"no {source} function fits {rule_name}")
    rng = np.random.default_rng(0)
    args = [np.asarray(rng.standard_normal([int(d) for d in p.shape])).astype(str(p.dtype)) for p in func.params]
    results = []
    for candidate in (func, sch.mod["main"]):
        lib = tvm.compile(tvm.IRModule({"main": candidate.with_attr("global_symbol", "main")}),
                          target=target.tvm_target()).jit()
        tensors = [tvm.runtime.tensor(a) for a in args]
        lib["main"](*tensors)
        results.append(tensors[-1].numpy())
    np.testing.assert_allclose(results[1], results[0], rtol=1e-4, atol=1e-4 * float(np.abs(results[0]).max()))


@pytest.mark.tvm
@pytest.mark.parametrize("tail", ["Transpose", "Flatten", "Sigmoid"])
@pytest.mark.parametrize("kernel", ["3x3", "1x1"])
def test_conv_followed_by_layout_ops_compiles_to_the_same_numbers(tmp_path, monkeypatch, tail, kernel):
    """An elementwise tail is folded into the conv's tiles; layout ops (and the conversion back from channel blocks)
    stay kernels of their own with the generic schedule. 5 input channels (no block: the conv reads NCHW), 24 output
    channels (8-lane blocks on AVX-512); the 3x3 conv with odd column counts and a partial pad on purpose."""
    from effc.artifact import compile_artifact, load_artifact
    from effc.backends.tvm.cpu.rules import CPURule
    from effc.onnx_runtime import run_model

    chosen, apply = [], CPURule.apply

    def recording(rule, *args):
        sch = apply(rule, *args)
        if sch is not None:
            chosen.append(rule.name)
        return sch

    monkeypatch.setattr(CPURule, "apply", recording)
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
    assert "blocked-conv" in chosen, chosen
    x = rng.standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(load_artifact(tmp_path / "a.effc")(x=x)["y"], run_model(model, {"x": x})["y"],
                               rtol=1e-4, atol=1e-4)


@pytest.mark.tvm
@pytest.mark.parametrize("in_channels,out_channels,groups,lanes,expected", [
    (64, 64, 1, 16, ["NCHW16c", "OIHW16i16o", "NCHW16c"]),
    (96, 24, 1, 16, ["NCHW16c", "OIHW16i8o", "NCHW8c"]),  # 24 channels: half-vector blocks
    (3, 32, 1, 16, ["NCHW", "OIHW16o", "NCHW16c"]),  # a first layer reads the NCHW image
    (144, 144, 144, 16, ["NCHW16c", "OIHW1i16o", "NCHW16c"]),  # depthwise
    (24, 24, 24, 4, ["NCHW4c", "OIHW1i4o", "NCHW4c"]),  # NEON
    (6, 6, 3, 16, None),  # grouped, not depthwise
    (64, 6, 1, 16, None),  # no block divides the output channels
    (6, 6, 6, 16, None)])
def test_layout_choice_per_convolution(in_channels, out_channels, groups, lanes, expected):
    from tvm import relax

    from effc.backends.tvm.cpu.layout import conv2d_layouts

    data = relax.Var("x", relax.TensorType((1, in_channels, 14, 14), "float32"))
    weight = relax.Var("w", relax.TensorType((out_channels, in_channels // groups, 3, 3), "float32"))
    layouts = conv2d_layouts(relax.op.nn.conv2d(data, weight, groups=groups), lanes)
    assert layouts == ({} if expected is None else {"relax.nn.conv2d": expected})


@pytest.mark.tvm
def test_clip_with_either_bound_or_both_stays_in_blocks_and_matches_onnx_runtime(tmp_path):
    """Clip is imported as elementwise maximum/minimum (frontend.elementwise_clip), so the blocked layout runs
    through it: the activations are converted to blocks once at the input and back once at the output, never
    between the convolutions."""
    from effc.artifact import compile_artifact, load_artifact
    from effc.onnx_runtime import run_model

    rng = np.random.default_rng(0)
    bound = lambda v: np.array(v, np.float32)  # noqa: E731
    proto = make_model(
        [helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1"),
         helper.make_node("Clip", ["a", "lo"], ["b"], name="lower_only"),
         helper.make_node("Conv", ["b", "w2"], ["c"], name="conv2"),
         helper.make_node("Clip", ["c", "", "hi"], ["d"], name="upper_only"),
         helper.make_node("Conv", ["d", "w3"], ["e"], name="conv3"),
         helper.make_node("Clip", ["e", "lo", "hi"], ["y"], name="both")],
        [("x", FLOAT, [1, 16, 7, 7])], [("y", FLOAT, None)],
        {"w1": rng.standard_normal((16, 16, 1, 1)).astype(np.float32),
         "w2": rng.standard_normal((16, 16, 1, 1)).astype(np.float32),
         "w3": rng.standard_normal((16, 16, 1, 1)).astype(np.float32), "lo": bound(-0.5), "hi": bound(1.5)})
    functions = fused_functions(proto, X86)
    transforms = [f for f in functions if "layout_transform" in f]
    assert len(transforms) <= 2 and len([f for f in functions if "conv2d" in f]) == 3, sorted(functions)  # in, out
    model = effc.load_model(proto)
    compile_artifact(model, get_target("x86"), tmp_path / "a.effc")
    x = rng.standard_normal((1, 16, 7, 7)).astype(np.float32)
    np.testing.assert_allclose(load_artifact(tmp_path / "a.effc")(x=x)["y"], run_model(model, {"x": x})["y"],
                               rtol=1e-4, atol=1e-4)
