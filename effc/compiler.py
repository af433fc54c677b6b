"""The library calls behind `effc compile` and `effc tune`: passes, then a backend, into an artifact folder.

The CLI, the benchmarks and the compression search call these; the CLI only parses options and prints.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from effc.artifact import Artifact, compile_artifact
from effc.backends.tvm.tuning import MIN_FLOPS, check_measurable
from effc.errors import EffcError
from effc.ir import Model, load_model
from effc.pipeline import Context, PassManager, Pipeline, RunResult
from effc.pipeline.steps import as_pipeline
from effc.targets import Target, get_target


@dataclass(frozen=True)
class TuneBudget:
    """How much MetaSchedule search to spend: `trials` candidates measured, or `seconds` of wall clock (exactly
    one), into the database folder `db` (default: one per target and CPU under ~/.cache/effc/tuning). Kernels with
    fewer than `min_flops` FLOPs are skipped; `rpc_tracker`/`rpc_key` time candidates on boards."""

    trials: int | None = None
    seconds: float | None = None
    db: str | os.PathLike | None = None
    min_flops: float = MIN_FLOPS
    rpc_tracker: str | None = None
    rpc_key: str | None = None

    def check(self) -> None:
        if self.trials is not None and self.seconds is not None:
            raise EffcError("give --trials or --time, not both")
        if self.trials is None and self.seconds is None:
            raise EffcError("give a tuning budget: --trials N or --time DURATION (e.g. --time 20m)")
        if self.trials is not None and self.trials < 1:
            raise EffcError(f"--trials {self.trials}: must be at least 1")
        if self.seconds is not None and self.seconds <= 0:
            raise EffcError("--time: must be more than zero")
        if self.rpc_key and not self.rpc_tracker:
            raise EffcError("--rpc-key needs --rpc-tracker")


def _model_of(model: Model | str | os.PathLike, input_shapes: Mapping[str, Sequence[int]] | None) -> tuple[Model, str | None]:
    """A model the passes may rewrite (a Model given is copied, so the caller's stays as it was) and its file."""
    if isinstance(model, Model):
        if input_shapes:
            raise EffcError("input_shapes apply when the model is loaded from a file; pin them in load_model")
        return model.copy(), None
    return load_model(model, input_shapes), str(model)


def _calibration_path(ctx: Context) -> str | None:
    source = getattr(ctx.calibration, "source", None)
    return source if source and Path(source).exists() else None


def tune(model: Model | str | os.PathLike, target: str | Target = "x86", budget: TuneBudget | None = None, *,
         pipeline: str | Pipeline = "default", ctx: Context | None = None, cpu: str | None = None,
         input_shapes: Mapping[str, Sequence[int]] | None = None,
         progress: Callable[[float, float, str], None] | None = None):
    """Run the passes, then tune the model's kernels for `target` into `budget.db`; returns the TuneReport."""
    record = get_target(target, cpu)
    if record.backend != "tvm":
        raise EffcError(f"--target {record.name} is not compiled by TVM: there is nothing to tune")
    budget = budget or TuneBudget()
    budget.check()
    check_measurable(record, budget.rpc_tracker)
    model, _ = _model_of(model, input_shapes)
    ctx = _context_for(ctx, record)
    from effc.backends import get_backend

    get_backend(record.backend).check(model, record)
    result = PassManager(as_pipeline(pipeline)).run(model, ctx)
    return _tune(result.model, record, budget, progress, ctx.seed)


def _tune(model: Model, target: Target, budget: TuneBudget, progress, seed: int):
    from effc.backends.tvm.tuning import default_db_dir
    from effc.backends.tvm.tuning import tune as tune_kernels

    if target.backend != "tvm":
        raise EffcError(f"--target {target.name} is not compiled by TVM: there is nothing to tune")
    db = Path(budget.db) if budget.db else default_db_dir(target)
    return tune_kernels(model, target, db, trials=budget.trials, seconds=budget.seconds, min_flops=budget.min_flops,
                        rpc_tracker=budget.rpc_tracker, rpc_key=budget.rpc_key, progress=progress, seed=seed)


def _context_for(ctx: Context | None, target: Target) -> Context:
    ctx = ctx or Context()
    ctx.target = target
    return ctx


def compile(model: Model | str | os.PathLike, target: str | Target = "x86", *, pipeline: str | Pipeline = "default",
            ctx: Context | None = None, out: str | os.PathLike | None = None, cpu: str | None = None,
            input_shapes: Mapping[str, Sequence[int]] | None = None, tuning_db: str | os.PathLike | None = None,
            tune: TuneBudget | None = None, progress: Callable[[str], None] | None = None,
            tune_progress: Callable[[float, float, str], None] | None = None, source: str | None = None) -> Artifact:
    """Run `pipeline` on `model` (a path, or a Model, which is copied), then compile it for `target` (a name or a
    record, `cpu` picks the CPU model) into the artifact folder `out` (atomically; default a new temporary folder).

    ctx carries calibration data, seed and policies (its target is set to the record). tuning_db applies a tuning
    database (`effc tune`); tune tunes first, into budget.db. source: the model file effc.json records (when a Model
    is given; a path given as `model` is recorded as it is). Returns the loaded Artifact, with `passes` (the
    RunResult: ledger, reports, warnings) and `tuning` (the TuneReport, or None). EffcError before any pass runs
    for ops the backend cannot take, unpinned dims, a bad budget or database."""
    from effc.backends import get_backend

    record = get_target(target, cpu)
    backend = get_backend(record.backend)
    if (tune is not None or tuning_db is not None) and record.backend != "tvm":
        raise EffcError(f"--target {record.name} is not compiled by TVM: --tune and --db do not apply")
    if tune is not None:
        if tuning_db is not None:
            raise EffcError("give a tuning database to apply or a budget to tune into one, not both")
        tune.check()
        check_measurable(record, tune.rpc_tracker)
    if tuning_db is not None:
        from effc.backends.tvm.tuning import check_db

        tuning_db = str(check_db(tuning_db, record))
    pipeline = as_pipeline(pipeline)
    model, path = _model_of(model, input_shapes)
    source = source or path
    backend.check(model, record)  # name unimportable ops and unpinned dims before any pass runs
    ctx = _context_for(ctx, record)
    result: RunResult = PassManager(pipeline).run(model, ctx)
    report = None
    if tune is not None:
        report = _tune(result.model, record, tune, tune_progress, ctx.seed)
        tuning_db = report.db
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="effc-")) / f"model.{record.name}.effc"
    options = {"tuning_db": tuning_db} if tuning_db is not None else {}
    meta = compile_artifact(result.model, record, out, source=source, pipeline=str(pipeline),
                            ledger=result.ledger.to_json(), calibration=_calibration_path(ctx), progress=progress,
                            **options)
    return Artifact(out, meta, passes=result, tuning=report)
