"""The target registry and the checks that run before TVM lowering."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from effc.backends.tvm.frontend import check_lowerable, fold_constants, unsupported_nodes
from effc.errors import EffcError
from effc.ir import load_model
from effc.targets import ARM_CPUS, get_target, register_target
from tests.conftest import FLOAT, make_model


def test_arm_cpu_selects_features():
    a53, a76, n2 = get_target("arm", "cortex-a53"), get_target("arm", "cortex-a76"), get_target("arm", "neoverse-n2")
    assert a53.tvm["mattr"] == ["+neon"] and a53.tvm["mcpu"] == "cortex-a53"
    assert "+dotprod" in a76.tvm["mattr"] and "+i8mm" not in a76.tvm["mattr"]
    assert {"+dotprod", "+i8mm"} <= set(n2.tvm["mattr"])
    assert a76.tvm["mtriple"] == "aarch64-linux-gnu" and a76.cross_compiler == "aarch64-linux-gnu-g++"
    assert a76.emulator == "qemu-aarch64" and a76.arch == "aarch64"
    assert set(ARM_CPUS) >= {"cortex-a53", "cortex-a72", "cortex-a76", "neoverse-n1"}


def test_x86_is_the_host():
    target = get_target("x86")
    assert target.emulator is None and target.arch == "x86_64" and target.tvm["kind"] == "llvm"
    assert target.tvm["mcpu"] == target.cpu and target.cpu != "generic"


def test_target_round_trips_through_json():
    target = get_target("arm", "cortex-a72")
    assert type(target).from_json(target.to_json()) == target


@pytest.mark.parametrize("name, cpu, message", [("riscv", None, "unknown target 'riscv'"),
                                                ("arm", "cortex-m4", "unknown --cpu 'cortex-m4'"),
                                                ("ort", "cortex-a53", "--cpu does not apply")])
def test_target_refusals(name, cpu, message):
    with pytest.raises(EffcError, match=message):
        get_target(name, cpu)


def test_duplicate_target_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_target("arm", lambda cpu: None)


def test_unsupported_op_is_named_with_its_node():
    model = load_model(make_model([helper.make_node("Celu", ["x"], ["y"], name="my_celu")],
                                  [("x", FLOAT, [1, 4])], [("y", FLOAT, [1, 4])]))
    assert unsupported_nodes(model) == [("my_celu", "Celu")]
    with pytest.raises(EffcError, match=r"my_celu \(Celu\)"):
        check_lowerable(model)


def test_dynamic_dims_must_be_pinned(tiny_model):
    with pytest.raises(EffcError, match="input 'x' has dynamic shape.*--input-shape x=1,4"):
        check_lowerable(load_model(tiny_model))
    check_lowerable(load_model(tiny_model, {"x": [2, 4]}))


def test_fold_constants_evaluates_constant_subgraphs_on_a_copy():
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    model = load_model(make_model(
        [helper.make_node("Mul", ["w", "two"], ["w2"], name="scale_w"), helper.make_node("MatMul", ["x", "w2"], ["y"], name="mm")],
        [("x", FLOAT, [1, 4])], [("y", FLOAT, [1, 3])], {"w": w, "two": np.array(2, np.float32)}))
    folded = fold_constants(model)
    assert [n.op for n in folded.graph.nodes] == ["MatMul"]
    assert [n.op for n in model.graph.nodes] == ["Mul", "MatMul"]
    np.testing.assert_array_equal(folded.graph.nodes[0].inputs[1].values, 2 * w)


def test_constant_int8_weights_are_dequantized_before_lowering():
    from effc.onnx_runtime import run_model

    rng = np.random.default_rng(0)
    weight, scale = rng.integers(-127, 127, (4, 3)).astype(np.int8), np.array([0.1, 0.2, 0.3], np.float32)
    m = make_model([helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["w"], name="dq", axis=1),
                    helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                   [("x", FLOAT, [2, 4])], [("y", FLOAT, [2, 3])], {"wq": weight, "s": scale, "z": np.zeros(3, np.int8)})
    folded = fold_constants(load_model(m))
    assert [n.op for n in folded.graph.nodes] == ["MatMul"]
    x = rng.standard_normal((2, 4)).astype(np.float32)
    # the exact product: ONNX Runtime itself would quantize x dynamically for MatMul(x, DQ(w))
    np.testing.assert_allclose(run_model(folded, {"x": x})["y"], x @ (weight * scale), rtol=1e-5, atol=1e-5)
