"""The Relax pipeline for CPU targets: legalize (with pre-packed weights), fuse, schedule, lower.

The stages, in order:
1. `prepack_weights` (before `relax_pipeline`): convolutions into blocked layouts (`cpu_layout`), legalize every
   operator to TIR, convolutions through effc's own
   kernels (`cpu_kernels.legalize_map`) whose weights are re-laid out by separate functions; lift those into
   `main_transform_params` and run it at compile time, so the artifact stores its weights pre-packed.
   `relax_pipeline` then fuses. The PrimFuncs at this point (`prepare_passes`) are the tuning tasks: `effc tune`
   extracts them there, so the tuning database matches what compile looks up.
2. With a tuning database: apply its best records (`MetaScheduleApplyDatabase`); those PrimFuncs are then marked
   scheduled.
3. `default_schedule` for every PrimFunc not scheduled yet (`cpu_schedule_rules`).
4. TVM's CPU lowering and finalization.
"""

from __future__ import annotations


def legalize_passes(target) -> list:
    """Every operator to TIR, convolutions through effc's kernels; the weight re-layouts they need are lifted into
    a separate function, `main_transform_params`, that `prepack_weights` runs at compile time."""
    from tvm import relax

    from effc.backends.cpu_kernels import legalize_map, vector_lanes
    from effc.backends.cpu_layout import convert_layout_pass

    return [
        relax.transform.DecomposeOpsForInference(),
        relax.transform.CanonicalizeBindings(),
        convert_layout_pass(vector_lanes(target)),
        relax.backend.DispatchSampling(),
        relax.backend.DispatchSortScan(),
        relax.transform.LegalizeOps(customize_legalize_map=legalize_map(target)),
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


def prepare_passes(target) -> list:
    """The passes that bring an imported Relax module to fused, unscheduled PrimFuncs (the tuning tasks)."""
    return legalize_passes(target) + fuse_passes()


def prepack_weights(mod, params: list, target):
    """Legalize `mod` for `target` and re-lay out its weights now, on this machine: (module without the weight
    transform, transformed params). The library then takes its weights in the kernels' layout, so loading an
    artifact does no work and a board over RPC or a microcontroller never runs the transform."""
    import tvm
    from tvm import relax

    with target:
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


def default_schedule_pass(target):
    """Schedules every PrimFunc that nothing scheduled before (no `tirx.is_scheduled` mark)."""
    from effc.backends.cpu_schedule_rules import apply_cpu_schedules

    return apply_cpu_schedules(target)


def relax_pipeline(target, *, tuning_db: str | None = None):
    """The Relax pipeline (a tvm.transform.Pass) for `target` after `prepack_weights`, given to
    `tvm.compile(..., relax_pipeline=...)`.

    tuning_db: a MetaSchedule work directory (database_workload.json, database_tuning_record.json) whose records
    replace the default schedules of the workloads they cover.
    """
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    @tvm.transform.module_pass(opt_level=0, name="effc_cpu_pipeline")
    def _pipeline(mod, _ctx):
        with target:
            passes = fuse_passes()
            if tuning_db:
                passes.append(relax.transform.MetaScheduleApplyDatabase(tuning_db))
            passes.append(default_schedule_pass(target))
            passes += cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target)
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline
