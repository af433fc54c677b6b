"""Kernel names -> Relax ops -> ONNX nodes, and the static memory figures of `effc profile`."""

from __future__ import annotations

import numpy as np
from onnx import helper

from effc.ir import load_model
from effc.ir.metrics import peak_activation_bytes
from effc.profile.kernel_map import kernel_ops, kernel_rows, map_kernels
from tests.conftest import FLOAT, make_model


def test_kernel_names_split_into_relax_ops():
    assert kernel_ops("fused_conv2d1_add2_relu1") == ["conv2d", "add", "relu"]
    assert kernel_ops("fused_batch_norm3_batch_norm3_add2_relu3") == ["batch_norm", "batch_norm", "add", "relu"]
    assert kernel_ops("max_pool2d") == ["max_pool2d"]


def test_calls_align_with_onnx_nodes_in_order():
    nodes = [["c1", "Conv", 100], ["bn1", "BatchNormalization", 0], ["clip1", "Clip", 0], ["flat", "Flatten", 0],
             ["down", "Conv", 10], ["c2", "Conv", 200], ["bn_down", "BatchNormalization", 0], ["bn2", "BatchNormalization", 0],
             ["add", "Add", 0], ["fc", "Gemm", 50]]
    sequence = ["conv2d", "vm.builtin.alloc_tensor", "fused_batch_norm_tir_isnan_where_maximum_minimum", "conv2d1",
                "conv2d", "fused_batch_norm1_batch_norm1_add", "transpose", "fused_matmul_add1"]
    mapping = {k: [nodes[j][0] for j in v] for k, v in map_kernels(sequence, nodes).items()}
    # Clip lowers to maximum and minimum: one node, not the next Clip; the reshape-only Flatten gets no kernel.
    assert mapping == {"conv2d": ["c1", "c2"], "fused_batch_norm_tir_isnan_where_maximum_minimum": ["bn1", "clip1"],
                       "conv2d1": ["down"], "fused_batch_norm1_batch_norm1_add": ["bn_down", "bn2", "add"],
                       "fused_matmul_add1": ["fc"]}
    rows = kernel_rows({"conv2d": [0.002, 0.004], "conv2d1": [0.001, 0.001], "vm.builtin.alloc_tensor": [1.0, 1.0]},
                       sequence, nodes, e2e_ms=5.0)
    assert [r.name for r in rows] == ["conv2d", "conv2d1"]  # builtins are not kernels; slowest first
    assert rows[0].calls == 2 and rows[0].macs == 300 and abs(rows[0].gflops - 2 * 300 / 3e-3 / 1e9) < 1e-12
    assert abs(rows[0].share - 3.0 / 5.0) < 1e-9


def test_fused_ops_prefer_consumers_of_what_the_call_already_claimed():
    nodes = [["mm", "MatMul", 64, []], ["unrelated_add", "Add", 0, []], ["bias", "Add", 0, [0]]]
    mapping = map_kernels(["fused_matmul_add", "add1"], nodes)
    assert mapping == {"fused_matmul_add": [0, 2], "add1": [1]}


def test_peak_activation_frees_tensors_after_their_last_use():
    model = load_model(make_model(
        [helper.make_node("Relu", ["x"], ["a"], name="r1"), helper.make_node("Relu", ["a"], ["b"], name="r2"),
         helper.make_node("Relu", ["b"], ["y"], name="r3")],
        [("x", FLOAT, [1, 1000])], [("y", FLOAT, [1, 1000])]))
    # at most two 4000-byte tensors are alive at once (a node's input and its output)
    assert peak_activation_bytes(model) == 2 * 4000
    assert np.dtype(np.float32).itemsize == 4


def test_folded_conv_bias_and_clip_nan_checks_stay_with_their_nodes():
    # BatchNorm folded into the Conv leaves a bias add in the conv kernel; Clip lowers with a NaN check per bound
    nodes = [["conv_a", "Conv", 100, []], ["clip_a", "Clip", 0, [0]], ["conv_b", "Conv", 50, [1]], ["clip_b", "Clip", 0, [2]]]
    kernel = "fused_conv2d_tir_isnan_where_add_maximum_tir_isnan_where_minimum"
    mapping = map_kernels([kernel, kernel.replace("conv2d", "conv2d1")], nodes)
    assert sorted(mapping[kernel]) == [0, 1]
    assert sorted(mapping[kernel.replace("conv2d", "conv2d1")]) == [2, 3]


def test_integer_kernels_claim_their_conv_or_gemm_and_its_requantization():
    """The integer lowering requantizes inside the kernel (cast, scale, round, zero point, clip, cast back): that is
    the QuantizeLinear after the conv, not the next one; a later kernel's conv is not pushed onto other nodes."""
    nodes = [["in/Q", "QuantizeLinear", 0, []], ["in/DQ", "DequantizeLinear", 0, [0]], ["c1", "Conv", 100, [1]],
             ["r1", "Relu", 0, [2]], ["r1/Q", "QuantizeLinear", 0, [3]], ["r1/DQ", "DequantizeLinear", 0, [4]],
             ["c2", "Conv", 100, [5]], ["r2", "Relu", 0, [6]], ["r2/Q", "QuantizeLinear", 0, [7]],
             ["r2/DQ", "DequantizeLinear", 0, [8]], ["fc", "Gemm", 50, [9]]]
    sequence = ["quantize", "fused_effc_conv2d_int8_add_cast_multiply_tir_round_add1_tir_clip_cast1",
                "fused_effc_conv2d_int81_add2_cast2_multiply1_tir_round1_add3_tir_clip1_cast3",
                "fused_matmul1_cast8_multiply4_add9"]
    mapping = {k: [nodes[j][0] for j in v] for k, v in map_kernels(sequence, nodes).items()}
    assert mapping == {"quantize": ["in/Q"],
                       "fused_effc_conv2d_int8_add_cast_multiply_tir_round_add1_tir_clip_cast1": ["c1", "r1/Q"],
                       "fused_effc_conv2d_int81_add2_cast2_multiply1_tir_round1_add3_tir_clip1_cast3": ["c2", "r2/Q"],
                       "fused_matmul1_cast8_multiply4_add9": ["fc"]}
