"""The CUDA lowering (target.lowering == "cuda"): imported Relax -> CUDA kernels scheduled by dlight's GPU rules,
compiled by nvcc for the record's architecture and embedded in the library.

The rules, first match wins (`gpu_rules`): dlight.gpu's Matmul (every NCHW convolution and matmul, as a tiled
GEMM), GEMV (matrix-vector products: the classifier at batch 1), Reduction, GeneralReduction (softmax, layer norm,
depthwise convolutions), Transpose and Fallback (everything elementwise). A tuning database replaces the rules'
schedule for the workloads it covers.

Embedding: TVM keeps CUDA source in the library unless its CUDA runtime loads, which needs the driver
(`libcuda.so.1`); on a machine without one the build runs in a child process (build.py) with a stub of the driver
that fails every call (stub.py), and `TVM_CUDA_COMPILE_MODE=nvcc`, so the library holds a fatbin of the record's
SASS and the machine that runs it needs no compiler.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from effc.targets import Target


def gpu_rules() -> list:
    from tvm.s_tir import dlight as dl

    return [dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Transpose(),
            dl.gpu.Fallback()]


def fuse_passes() -> list:
    from tvm import relax

    return [relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(), relax.transform.FoldConstant(),
            relax.transform.FuseOps(), relax.transform.FuseTIR()]


def task_passes(target: Target) -> list:
    """The passes that bring an imported Relax module to fused, unscheduled PrimFuncs (the tuning tasks)."""
    from tvm import relax

    return [relax.backend.DispatchSampling(), relax.backend.DispatchSortScan(), *fuse_passes()]


def prepare(mod, params: list, target: Target):
    """Nothing to do before the pipeline: weights keep their ONNX layouts on the GPU."""
    return mod, params


def schedule_pass(target: Target):
    """Schedules every PrimFunc nothing scheduled before (no `tirx.is_scheduled`) with the GPU rules."""
    from tvm.s_tir import dlight as dl

    return dl.ApplyDefaultSchedule(*gpu_rules())


def default_schedule(func, target: Target):
    """The Schedule the GPU rules give `func` (a tuning task), or None where none applies."""
    import tvm

    from effc.backends.tvm.cpu.rules import RULE_ATTR

    with target.tvm_target() as tvm_target:
        for rule in gpu_rules():
            sch = rule.apply(func, tvm_target, False)
            if sch is not None:
                sch = sch[0] if isinstance(sch, list) else sch
                return tvm.s_tir.Schedule(sch.mod["main"].with_attr(RULE_ATTR, type(rule).__name__))
    return None


def relax_pipeline(target: Target, *, tuning_db: str | None = None):
    """TVM's CUDA pipeline with the tuning database applied before the GPU rules."""
    import tvm
    from tvm import relax
    from tvm.relax.backend.cuda import pipeline as cuda

    tvm_target = target.tvm_target()

    @tvm.transform.module_pass(opt_level=0, name="effc_cuda_pipeline")
    def _pipeline(mod, _ctx):
        with tvm_target:
            passes = [*task_passes(target)]
            if tuning_db:
                passes.append(relax.transform.MetaScheduleApplyDatabase(tuning_db))
            passes.append(schedule_pass(target))
            passes += cuda.dataflow_lower_passes(tvm_target) + cuda.finalize_passes(tvm_target)
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def build(model, target: Target, out_dir: Path, *, progress: Callable[[str], None] | None = None,
          tuning_db: str | None = None):
    """Compile `model` for `target` into `out_dir` in a child process that can load TVM's CUDA runtime (the
    lowering's own build: see effc.backends.tvm); returns the backend's Compiled."""
    from effc.backends.base import Compiled
    from effc.backends.tvm.backend import LIBRARY, PARAMS, profile_extras
    from effc.backends.tvm.cuda.build import build_in_child
    from effc.backends.tvm.frontend import fold_constants

    say = progress or (lambda text: None)
    say("folding constants")
    model = fold_constants(model)
    built = build_in_child(model, target, out_dir, library=LIBRARY, params=PARAMS, tuning_db=tuning_db, progress=say)
    return Compiled(LIBRARY, PARAMS, {**profile_extras(model), **built})
