"""The CPU lowering (target.lowering == "cpu"): imported Relax -> a library of scheduled kernels for x86 and AArch64.

The stages, in order:
1. `prepare` (before `tvm.compile`): convolutions into blocked layouts (layout.py), every operator legalized to TIR,
   convolutions through effc's own kernels (kernels.py) whose weights are re-laid out by separate functions; those
   are lifted into `main_transform_params` and run here at compile time, so the artifact stores its weights
   pre-packed and a board, an RPC server or an emulator never runs the transform.
2. `relax_pipeline` fuses. The PrimFuncs at this point (`task_passes`) are the tuning tasks: `effc tune` extracts
   them there, so the tuning database matches what compile looks up.
3. With a tuning database: apply its best records (`MetaScheduleApplyDatabase`), which marks those scheduled.
4. effc's CPU rules (rules.py) for every PrimFunc not scheduled yet, through dlight's ApplyDefaultSchedule.
5. TVM's CPU lowering and finalization.

Every function takes the effc target record: tile sizes and layouts follow its ISA (`target.isa`).
"""

from __future__ import annotations

from effc.targets import Target


def lower_integer(mod, params: list, target: Target):
    """The QDQ islands of an int8 model as integer Relax (effc.backends.tvm.integer): (module, params, report for
    effc.json: `integer_islands`, one entry per conv2d/matmul saying whether it runs integer and what or why not).
    Weights the rewrite keeps int8 stay int8 in the params. Convolutions take the integer kernel the target's
    ISA has (integer.dot), depthwise ones integer.depthwise; a conv neither computes stays float and is reported
    (integer.selection). Matmuls over constant weights take the same dot instructions where one fits
    (integer.dense), else TVM's int32 matmul."""
    from effc.backends.tvm.integer import bind_params, dense, dot, lift_constants, lower_qdq
    from effc.backends.tvm.integer.selection import blocked_kernels, conv_kernels

    kernel, float_reason = conv_kernels(target)
    mod, islands = lower_qdq(bind_params(mod, params), conv_kernel=kernel, float_reason=float_reason,
                             blocked_kernel=blocked_kernels(target))
    mod = dense.rewrite_matmuls(mod, dot.instructions_for(target.isa))
    mod, values = lift_constants(mod)
    return mod, values, {"integer_islands": [island.to_json() for island in islands]}


def legalize_passes(target: Target) -> list:
    """Every operator to TIR, convolutions through effc's kernels; the weight re-layouts they need are lifted into
    a separate function, `main_transform_params`, that `prepare` runs at compile time."""
    from tvm import relax

    from effc.backends.tvm.cpu.kernels import legalize_map
    from effc.backends.tvm.cpu.layout import convert_layout_pass

    lanes = target.isa.lanes()
    return [
        relax.transform.DecomposeOpsForInference(),
        relax.transform.CanonicalizeBindings(),
        convert_layout_pass(lanes),
        relax.backend.DispatchSampling(),
        relax.backend.DispatchSortScan(),
        relax.transform.LegalizeOps(customize_legalize_map=legalize_map(lanes)),
        relax.transform.LiftTransformParams(),
    ]


def fuse_passes() -> list:
    from tvm import relax

    return [
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]


def task_passes(target: Target) -> list:
    """The passes that bring an imported Relax module to fused, unscheduled PrimFuncs (the tuning tasks)."""
    return legalize_passes(target) + fuse_passes()


def prepare(mod, params: list, target: Target):
    """Legalize `mod` for `target` and re-lay out its weights now, on this machine: (module without the weight
    transform, transformed params). The library then takes its weights in the kernels' layout, so loading an
    artifact does no work."""
    import tvm
    from tvm import relax

    with target.tvm_target():
        mod = tvm.transform.Sequential(legalize_passes(target))(mod)
    names = [gvar.name_hint for gvar in mod.get_global_vars()]
    if "main_transform_params" not in names:
        return mod, params
    transform = relax.transform.DeadCodeElimination(["main_transform_params"])(mod)
    transform = tvm.IRModule({gvar: func for gvar, func in transform.functions_items()
                              if gvar.name_hint != "main"})
    host = tvm.target.Target({"kind": "llvm"})
    executable = tvm.compile(transform, target=host, relax_pipeline=relax.get_default_pipeline(host))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    packed = vm["main_transform_params"]([tvm.runtime.tensor(p.numpy() if hasattr(p, "numpy") else p) for p in params])
    mod = relax.transform.DeadCodeElimination(["main"])(
        tvm.IRModule({gvar: func for gvar, func in mod.functions_items() if gvar.name_hint != "main_transform_params"}))
    return mod, [t.numpy() for t in packed]


def schedule_pass(target: Target):
    """Schedules every PrimFunc that nothing scheduled before (no `tirx.is_scheduled` mark) with effc's CPU rules."""
    from effc.backends.tvm.cpu.rules import schedule_pass as rules_pass

    return rules_pass(target.isa)


def default_schedule(func, target: Target):
    """The Schedule effc's rules give `func` (a tuning task) on `target`, or None where no rule applies."""
    from effc.backends.tvm.cpu.rules import default_schedule as rules_schedule

    return rules_schedule(func, target.isa)


def _record_arithmetic(report: dict):
    import tvm

    from effc.backends.tvm.integer.report import kernel_arithmetic

    @tvm.transform.module_pass(opt_level=0, name="effc_record_kernel_arithmetic")
    def _record(mod, _ctx):
        report["kernel_arithmetic"] = kernel_arithmetic(mod)
        return mod

    return _record


def relax_pipeline(target: Target, *, tuning_db: str | None = None, report: dict | None = None):
    """The Relax pipeline (a tvm.transform.Pass) for `target` after `prepare`, given to
    `tvm.compile(..., relax_pipeline=...)`.

    tuning_db: a MetaSchedule work directory (database_workload.json, database_tuning_record.json) whose records
    replace the default schedules of the workloads they cover. report: a dict that receives `kernel_arithmetic`
    ({kernel: "integer" | "float"} for its convolutions and matmuls, effc.backends.tvm.integer.report).
    """
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    tvm_target = target.tvm_target()

    @tvm.transform.module_pass(opt_level=0, name="effc_cpu_pipeline")
    def _pipeline(mod, _ctx):
        with tvm_target:
            passes = fuse_passes()
            if report is not None:
                passes.append(_record_arithmetic(report))
            if tuning_db:
                passes.append(relax.transform.MetaScheduleApplyDatabase(tuning_db))
            passes.append(schedule_pass(target))
            passes += cpu.dataflow_lower_passes(tvm_target) + cpu.finalize_passes(tvm_target)
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline
