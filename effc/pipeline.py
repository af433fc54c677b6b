"""Pipelines and the pass manager that runs them, with instruments and a ledger."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import onnx

from effc.context import Context
from effc.errors import EffcError, VerificationError
from effc.ir import Model
from effc.metrics import ModelStats, model_stats
from effc.passbase import Pass, get_pass
from effc.runtime import Drift, Latency
from effc.spec import StepSpec, format_value, load_recipe, parse_spec
from effc.structure import StructureError, check_structure

MAX_FIXPOINT_ITERATIONS = 8
# Tests turn this on (tests/conftest.py): the ONNX checker runs after every pass, not just the structure check.
STRICT_CHECKS = False


class FixedPoint:
    """Steps repeated until none of them changes the model (or an iteration cap is hit)."""

    def __init__(self, steps: Sequence["Step"], max_iterations: int = MAX_FIXPOINT_ITERATIONS, name: str = "fixpoint"):
        self.steps = list(steps)
        self.max_iterations = max_iterations
        self.name = name

    def __str__(self) -> str:
        return f"{self.name}[{','.join(str(s) for s in self.steps)}]"

    def passes(self) -> Iterator[Pass]:
        for step in self.steps:
            yield from _passes_of(step)


Step = Any  # Pass | FixedPoint | Pipeline


class Pipeline:
    """An ordered list of steps; prints back to the spec it came from."""

    def __init__(self, steps: Sequence[Step], name: str | None = None):
        self.steps = list(steps)
        self.name = name  # set for named pipelines such as "default"

    @classmethod
    def parse(cls, spec: str) -> "Pipeline":
        return cls([_build(s) for s in parse_spec(spec)])

    @classmethod
    def from_recipe(cls, path: str | Path) -> "Pipeline":
        return cls([_build(s) for s in load_recipe(path)])

    def __str__(self) -> str:
        return self.name or ",".join(str(s) for s in self.steps)

    def passes(self) -> Iterator[Pass]:
        for step in self.steps:
            yield from _passes_of(step)


def _passes_of(step: Step) -> Iterator[Pass]:
    if isinstance(step, Pass):
        yield step
    else:
        yield from step.passes()


_PIPELINES: dict[str, Callable[[], Pipeline]] = {}


def register_pipeline(name: str, build: Callable[[], Sequence[Step]]) -> None:
    """Name a pipeline (such as "default"); `build` returns its steps. Raises on duplicates."""
    if name in _PIPELINES:
        raise ValueError(f"a pipeline named {name!r} is already registered")
    _PIPELINES[name] = lambda: Pipeline(build(), name=name)


def registered_pipelines() -> dict[str, Callable[[], Pipeline]]:
    import effc.passes  # noqa: F401

    return dict(_PIPELINES)


def _build(step: StepSpec) -> Step:
    if step.children is not None:
        if step.name != "fixpoint":
            raise EffcError(f"unknown group {step.name!r}[...]; the only group is fixpoint[...]")
        return FixedPoint([_build(c) for c in step.children])
    pipelines = registered_pipelines()
    if step.name in pipelines:
        if step.options:
            raise EffcError(f"pipeline {step.name!r} takes no options")
        return pipelines[step.name]()
    cls = get_pass(step.name)
    return cls(**step.options)


# ---------------------------------------------------------------- ledger


@dataclass
class LedgerRow:
    step: str
    kind: str
    changed: bool
    seconds: float
    stats: ModelStats
    pass_stats: dict[str, Any] = field(default_factory=dict)
    latency: Latency | None = None
    drift: Drift | None = None

    def to_json(self) -> dict:
        return {
            "step": self.step,
            "kind": self.kind,
            "changed": self.changed,
            "seconds": round(self.seconds, 4),
            **self.stats.to_json(),
            "pass_stats": self.pass_stats,
            "latency": self.latency.to_json() if self.latency else None,
            "drift": self.drift.to_json() if self.drift else None,
        }


@dataclass
class Ledger:
    pipeline: str
    rows: list[LedgerRow] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"pipeline": self.pipeline, "rows": [r.to_json() for r in self.rows]}


@dataclass
class RunResult:
    model: Model
    ledger: Ledger
    context: Context


# ---------------------------------------------------------------- instruments


class Instrument:
    """Hooks around a pipeline run; override what you need. Instruments observe, passes act."""

    def before_pipeline(self, model: Model, ctx: Context) -> None: ...

    def before_pass(self, p: Pass, model: Model, ctx: Context) -> None: ...

    def after_pass(self, p: Pass, model: Model, ctx: Context, result, seconds: float) -> None: ...

    def after_pipeline(self, model: Model, ctx: Context) -> None: ...


class DumpAfter(Instrument):
    """Write the intermediate ONNX after each named pass (all passes for '*') into a folder."""

    def __init__(self, names: Sequence[str], folder: str | Path):
        self.names = set(names)
        self.folder = Path(folder)
        self.count = 0

    def after_pass(self, p, model, ctx, result, seconds):
        if "*" in self.names or p.name in self.names:
            self.count += 1
            model.save(self.folder / f"{self.count:02d}-{p.name}.onnx")


# ---------------------------------------------------------------- the manager


class PassManager:
    """Runs a pipeline on a model in a context: checks requirements first, then each pass with
    its instruments, a structure check after each pass, verification of lossless passes when
    `ctx.verify`, and a ledger row per pass."""

    def __init__(self, pipeline: Pipeline | str | Sequence[Step], instruments: Sequence[Instrument] = ()):
        if isinstance(pipeline, str):
            pipeline = Pipeline.parse(pipeline)
        elif not isinstance(pipeline, Pipeline):
            pipeline = Pipeline(pipeline)
        self.pipeline = pipeline
        self.instruments = list(instruments)

    def run(self, model: Model, ctx: Context | None = None) -> RunResult:
        ctx = ctx or Context()
        for p in self.pipeline.passes():
            p.check_context(ctx)
        self._model_in = model.copy()
        self._history: list[str] = []
        self._instruments = [*self.instruments, *ctx.instruments]
        ledger = Ledger(str(self.pipeline))
        self._ledger = ledger
        ledger.rows.append(self._row("input", "-", False, 0.0, model, ctx, {}))
        for inst in self._instruments:
            inst.before_pipeline(model, ctx)
        self._order = [p.name for p in self.pipeline.passes()]
        for step in self.pipeline.steps:
            self._run_step(step, model, ctx, in_fixpoint=False)
        for inst in self._instruments:
            inst.after_pipeline(model, ctx)
        model.metadata["effc.pipeline"] = str(self.pipeline)
        return RunResult(model, ledger, ctx)

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
        ctx.history = list(self._history)
        index = next(i for i, q in enumerate(self.pipeline.passes()) if q is p)
        ctx.upcoming = self._order[index + 1:]
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
        self._history.append(p.spec())
        if result is None or not hasattr(result, "changed"):
            raise PassFailure(p, self._history, TypeError("run() must return a PassResult"))
        try:
            check_structure(model.graph)
            if STRICT_CHECKS:
                onnx.checker.check_model(model.to_proto())
        except (StructureError, onnx.checker.ValidationError) as exc:
            raise PassFailure(p, self._history, exc) from exc
        if result.report is not None:
            ctx.reports[p.name] = result.report
        if result.changed and p.kind == "lossless" and ctx.verify:
            self._verify_lossless(p, model, ctx)
        if result.changed or not in_fixpoint:
            self._ledger.rows.append(self._row(p.spec(), p.kind, result.changed, seconds, model, ctx, result.stats))
        for inst in self._instruments:
            inst.after_pass(p, model, ctx, result, seconds)
        return bool(result.changed)

    def _row(self, name, kind, changed, seconds, model, ctx, stats) -> LedgerRow:
        from effc.verify import latency_of, drift_against

        row = LedgerRow(name, kind, changed, seconds, model_stats(model), dict(stats))
        if ctx.measure_latency:
            row.latency = latency_of(model, ctx)
        if ctx.measure_drift:
            row.drift = drift_against(self._model_in, model, ctx, samples=ctx.drift_samples)
        return row

    def _verify_lossless(self, p: Pass, model: Model, ctx: Context) -> None:
        from effc.verify import drift_against

        drift = drift_against(self._model_in, model, ctx, samples=ctx.verify_samples)
        if not drift.within(ctx.tolerance.atol, ctx.tolerance.rtol):
            raise VerificationError(
                f"lossless pass {p.name} changed the outputs: max abs error {drift.max_abs:.3g} "
                f"(scale {drift.scale:.3g}, tolerance {ctx.tolerance.atol:g} + {ctx.tolerance.rtol:g} x scale); "
                f"pipeline so far: {','.join(self._history)}"
            )


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


__all__ = ["Pipeline", "FixedPoint", "PassManager", "Instrument", "DumpAfter", "Ledger", "LedgerRow", "RunResult",
           "register_pipeline", "optimize", "PassFailure", "format_value"]
