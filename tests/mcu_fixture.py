"""A hand-written microcontroller artifact that follows the contract of the MCU lowering (model.h, model.c,
kernels.c, weights.c, effc.json with an "mcu" section): a dense layer + ReLU into the arena, then a copy to the
first output and an argmax into the second. It tests the board project and the qemu runner without TVM; NumPy
gives the reference."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from effc.artifact import FORMAT, FORMAT_VERSION, META
from effc.backends.tvm.mcu.board import write_project
from effc.targets.mcu import MCU_TARGETS

IN, OUT = 8, 4
KERNELS = ["dense_relu", "copy_argmax"]


def weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((OUT, IN)).astype(np.float32), rng.standard_normal(OUT).astype(np.float32)


def reference(x: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    w, b = weights(seed)
    y = np.maximum(x.astype(np.float32) @ w.T + b, 0).astype(np.float32)
    return [y, np.argmax(y, axis=1).astype(np.int32)]


MODEL_H = f"""#ifndef EFFC_MODEL_H
#define EFFC_MODEL_H
#include <stdint.h>
#define EFFC_NUM_INPUTS 1
#define EFFC_NUM_OUTPUTS 2
#define EFFC_ARENA_BYTES {OUT * 4}
#define EFFC_INPUT0_ELEMS {IN}
#define EFFC_OUTPUT0_ELEMS {OUT}
#define EFFC_OUTPUT1_ELEMS 1
#define EFFC_NUM_KERNELS {len(KERNELS)}
extern const char *const effc_kernel_names[];
int effc_run(const float *input0, float *output0, int32_t *output1);
#endif
"""

KERNELS_C = f"""#include <stdint.h>
extern const float dense_w[{OUT * IN}], dense_b[{OUT}];
void dense_relu(const float *x, float *y) {{
  for (int o = 0; o < {OUT}; o++) {{
    float acc = dense_b[o];
    for (int i = 0; i < {IN}; i++) acc += x[i] * dense_w[o * {IN} + i];
    y[o] = acc > 0.0f ? acc : 0.0f;
  }}
}}
void copy_argmax(const float *y, float *out, int32_t *index) {{
  int32_t best = 0;
  for (int o = 0; o < {OUT}; o++) {{
    out[o] = y[o];
    if (y[o] > y[best]) best = o;
  }}
  *index = best;
}}
"""

MODEL_C = """#include "model.h"
#ifndef EFFC_KERNEL_BEGIN
#define EFFC_KERNEL_BEGIN(i)
#define EFFC_KERNEL_END(i)
#endif
void dense_relu(const float *x, float *y);
void copy_argmax(const float *y, float *out, int32_t *index);
const char *const effc_kernel_names[] = {"dense_relu", "copy_argmax"};
static uint8_t arena[EFFC_ARENA_BYTES] __attribute__((aligned(16)));
int effc_run(const float *input0, float *output0, int32_t *output1) {
  EFFC_KERNEL_BEGIN(0); dense_relu(input0, (float *)(arena + 0)); EFFC_KERNEL_END(0);
  EFFC_KERNEL_BEGIN(1); copy_argmax((const float *)(arena + 0), output0, output1); EFFC_KERNEL_END(1);
  return 0;
}
"""


def _c_floats(values: np.ndarray) -> str:
    return ", ".join(f"{v!r}f" if "e" in repr(v) or "." in repr(v) else f"{v!r}.0f" for v in values.astype(float).tolist())


def write_fixture(folder: Path, target_name: str = "cortex-m4", *, seed: int = 0, kernels_c: str = KERNELS_C) -> Path:
    """The fixture artifact for `target_name` in `folder` (created); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    w, b = weights(seed)
    (folder / "model.h").write_text(MODEL_H)
    (folder / "model.c").write_text(MODEL_C)
    (folder / "kernels.c").write_text(kernels_c)
    (folder / "weights.c").write_text(f"const float dense_w[{OUT * IN}] = {{{_c_floats(w.ravel())}}};\n"
                                      f"const float dense_b[{OUT}] = {{{_c_floats(b)}}};\n")
    target = next(t for t in MCU_TARGETS if t.name == target_name)
    write_project(folder, target)
    sources = ["model.c", "model.h", "kernels.c", "weights.c"]
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "backend": "tvm", "target": target.to_json(),
        "library": "model.c", "params": None,
        "inputs": [{"name": "x", "shape": [1, IN], "dtype": "float32"}],
        "outputs": [{"name": "y", "shape": [1, OUT], "dtype": "float32", "file": "y.npy"},
                    {"name": "label", "shape": [1], "dtype": "int32", "file": "label.npy"}],
        "pipeline": None, "ledger": None, "calibration": None, "source": {"path": None, "sha256": None},
        "files": {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in sources},
        "mcu": {"arena_bytes": OUT * 4, "arena_lower_bound": OUT * 4, "arena_naive_sum": OUT * 4,
                "weight_bytes": (OUT * IN + OUT) * 4,
                "kernels": [{"name": "dense_relu", "onnx_nodes": ["Gemm_0", "Relu_1"], "macs": OUT * IN, "arithmetic": "float"},
                            {"name": "copy_argmax", "onnx_nodes": ["ArgMax_2"], "macs": 0, "arithmetic": "float"}],
                "sources": sources},
    }
    (folder / META).write_text(json.dumps(meta, indent=1))
    return folder
