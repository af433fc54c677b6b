"""The Relax pipeline for CPU targets: legalize (with pre-packed weights), fuse, schedule, lower.

The stages, in order:
1. `prepare_passes`: legalize every operator to TIR, convolutions through effc's own kernels
   (`cpu_kernels.legalize_map`) whose weights are re-laid out by separate functions; lift those into
   `main_transform_params` (run once when the artifact loads); fuse. The PrimFuncs at this point are the
   tuning tasks: `effc tune` extracts them here, so the tuning database matches what compile looks up.
2. With a tuning database: apply its best records (`MetaScheduleApplyDatabase`); those PrimFuncs are then marked
   scheduled.
3. `default_schedule` for every PrimFunc not scheduled yet (`cpu_schedule_rules`).
4. TVM's CPU lowering and finalization.
"""

from __future__ import annotations


def prepare_passes(target) -> list:
    """The passes that bring an imported Relax module to fused, unscheduled PrimFuncs (the tuning tasks)."""
    from tvm import relax

    from effc.backends.cpu_kernels import legalize_map

    return [
        relax.transform.DecomposeOpsForInference(),
        relax.transform.CanonicalizeBindings(),
        relax.backend.DispatchSampling(),
        relax.backend.DispatchSortScan(),
        relax.transform.LegalizeOps(customize_legalize_map=legalize_map(target)),
        relax.transform.LiftTransformParams(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
    ]


def default_schedule_pass(target):
    """Schedules every PrimFunc that nothing scheduled before (no `tir.is_scheduled` attribute)."""
    from effc.backends.cpu_schedule_rules import apply_cpu_schedules

    return apply_cpu_schedules(target)


def relax_pipeline(target, *, tuning_db: str | None = None):
    """The complete Relax pipeline (a tvm.transform.Pass) for `target`, given to `tvm.compile(..., relax_pipeline=...)`.

    tuning_db: a MetaSchedule work directory (database_workload.json, database_tuning_record.json) whose records
    replace the default schedules of the workloads they cover.
    """
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    @tvm.transform.module_pass(opt_level=0, name="effc_cpu_pipeline")
    def _pipeline(mod, _ctx):
        with target:
            passes = prepare_passes(target)
            if tuning_db:
                passes.append(relax.transform.MetaScheduleApplyDatabase(tuning_db))
            passes.append(default_schedule_pass(target))
            passes += cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target)
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline
