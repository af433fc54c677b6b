"""The pass manager: runs a pipeline on a model in a context, with instruments and a ledger."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import onnx

from effc.errors import EffcError, VerificationError
from effc.ir import Model
from effc.ir.structure import StructureError, check_structure
from effc.pipeline.context import Context
from effc.pipeline.instruments import DriftColumn, Instrument, LatencyColumn, VerifyLossless
from effc.pipeline.ledger import Ledger, LedgerRecorder
from effc.pipeline.pass_base import Pass, registered_passes
from effc.pipeline.steps import FixedPoint, Pipeline, Step, as_pipeline


@dataclass
class RunResult:
    model: Model
    ledger: Ledger
    context: Context


class PassManager:
    """Runs a pipeline: checks every pass's requirements first, then each pass that is not disabled, with the
    structure check after it (and the ONNX checker with strict checks), and the instruments around it.

    The context decides which built-in instruments run: `verify` (lossless passes against the input),
    `measure_latency` and `measure_drift` (ledger columns); the ledger itself is always recorded."""

    def __init__(self, pipeline: Pipeline | str | Sequence[Step], instruments: Sequence[Instrument] = ()):
        self.pipeline = as_pipeline(pipeline)
        self.instruments = list(instruments)

    def run(self, model: Model, ctx: Context | None = None) -> RunResult:
        ctx = ctx or Context()
        disabled = set(ctx.skipped_passes())
        unknown = sorted(disabled - set(registered_passes()))
        if unknown:
            raise EffcError(f"cannot disable unknown pass {unknown[0]!r}; known passes: {', '.join(registered_passes())}")
        for p in self.pipeline.passes():
            if p.name not in disabled:
                p.check_context(ctx)
                p.check_model(model)
        recorder = LedgerRecorder(str(self.pipeline), [*([LatencyColumn()] if ctx.measure_latency else []),
                                                       *([DriftColumn()] if ctx.measure_drift else [])])
        self._instruments = [*([VerifyLossless()] if ctx.verify else []), recorder, *self.instruments, *ctx.instruments]
        self._history: list[str] = []
        self._order = list(self.pipeline.passes())
        self._disabled = disabled
        self._strict = ctx.strict()
        for inst in self._instruments:
            inst.before_pipeline(model, ctx)
        for step in self.pipeline.steps:
            self._run_step(step, model, ctx, in_fixpoint=False)
        for inst in self._instruments:
            inst.after_pipeline(model, ctx)
        model.metadata["effc.pipeline"] = str(self.pipeline)
        if disabled & {p.name for p in self._order}:
            model.metadata["effc.disabled_passes"] = ",".join(sorted(disabled & {p.name for p in self._order}))
        return RunResult(model, recorder.ledger, ctx)

    def _run_step(self, step: Step, model: Model, ctx: Context, in_fixpoint: bool) -> bool:
        if isinstance(step, Pass):
            return self._run_pass(step, model, ctx, in_fixpoint)
        if isinstance(step, FixedPoint):
            changed_any = False
            for _ in range(step.max_iterations):
                changed = False
                for inner in step.steps:
                    changed |= self._run_step(inner, model, ctx, in_fixpoint=True)
                changed_any |= changed
                if not changed:
                    break
            return changed_any
        changed = False
        for inner in step.steps:
            changed |= self._run_step(inner, model, ctx, in_fixpoint)
        return changed

    def _run_pass(self, p: Pass, model: Model, ctx: Context, in_fixpoint: bool) -> bool:
        index = next(i for i, q in enumerate(self._order) if q is p)
        ctx.history, ctx.upcoming, ctx.in_fixpoint = list(self._history), [q.name for q in self._order[index + 1:]], in_fixpoint
        if p.name in self._disabled or not all(inst.should_run(p, ctx) for inst in self._instruments):
            return False
        for inst in self._instruments:
            inst.before_pass(p, model, ctx)
        start = time.perf_counter()
        try:
            result = p.run(model, ctx)
        except EffcError as exc:
            message = str(exc)
            raise EffcError(message if message.startswith(f"pass {p.name}") else f"pass {p.name}: {message}") from None
        except VerificationError:
            raise
        except Exception as exc:
            raise PassFailure(p, self._history, exc) from exc
        seconds = time.perf_counter() - start
        if result is None or not hasattr(result, "changed"):
            raise PassFailure(p, self._history, TypeError("run() must return a PassResult"))
        try:
            check_structure(model.graph)
            if self._strict:
                onnx.checker.check_model(model.to_proto())
        except (StructureError, onnx.checker.ValidationError) as exc:
            raise PassFailure(p, [*self._history, p.spec()], exc) from exc
        self._history.append(p.spec())
        if result.report is not None:
            ctx.reports[p.name] = result.report
        for inst in self._instruments:
            inst.after_pass(p, model, ctx, result, seconds)
        return bool(result.changed)


class PassFailure(RuntimeError):
    """An internal error inside a pass; names the pass and the pipeline that ran before it."""

    def __init__(self, p: Pass, history: list[str], cause: BaseException):
        self.pass_name = p.name
        self.history = list(history)
        before = ",".join(history[:-1]) if history and history[-1] == p.spec() else ",".join(history)
        super().__init__(f"pass {p.spec()} failed ({type(cause).__name__}: {cause}); passes before it: {before or 'none'}")


def optimize(model: Model, passes: str | Pipeline | Sequence[Step] = "default", ctx: Context | None = None) -> RunResult:
    """Run a pipeline (spec string, Pipeline, or list of pass objects) on a model."""
    return PassManager(passes).run(model, ctx)
