"""Pipelines: ordered steps (passes, `fixpoint[...]` groups, named pipelines), parsed from specs or TOML recipes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from effc.errors import EffcError
from effc.pipeline.pass_base import Pass, get_pass
from effc.pipeline.spec import StepSpec, load_recipe, parse_spec

MAX_FIXPOINT_ITERATIONS = 8


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
        if not spec.strip():
            raise EffcError("empty pipeline: give at least one pass, e.g. --passes default")
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
    import effc.passes  # noqa: F401  (registers the built-in pipelines)

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


def as_pipeline(pipeline: "Pipeline | str | Sequence[Step]") -> Pipeline:
    if isinstance(pipeline, Pipeline):
        return pipeline
    if isinstance(pipeline, str):
        return Pipeline.parse(pipeline)
    return Pipeline(pipeline)
