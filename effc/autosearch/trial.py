"""One point of the search measured the way a user would: the passes of its spec, quality on the evaluation data
(on ONNX Runtime), size and MACs of the model, and, for points within the budget, an artifact compiled with
`effc.compile` for the target and timed there. Points outside the budget get a MAC-scaled latency estimate
instead of a compile (cheap proxies first)."""

from __future__ import annotations

import dataclasses
import math
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from effc.autosearch.budget import Budget
from effc.autosearch.quality import Metric
from effc.calib import CalibrationData
from effc.ir import load_model
from effc.ir.metrics import model_stats
from effc.pipeline import Context, PassManager

OBJECTIVES = ("latency", "size", "macs")
LATENCY_REPEATS = 20


@dataclass
class Point:
    """A measured configuration. latency_ms is measured on the target (None: estimated, see `estimated`)."""

    spec: str
    config: dict
    quality: float
    drop: float
    size_bytes: int
    macs: int
    latency_ms: float | None = None
    estimated: bool = False
    feasible: bool = False
    trial: int | None = None
    onnx: str | None = None
    artifact: str | None = None
    extra: dict = field(default_factory=dict)

    def objective(self, name: str) -> float:
        return {"latency": self.latency_ms, "size": self.size_bytes, "macs": self.macs}[name]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


class Evaluator:
    """Measures configurations of one model for one target against one budget."""

    def __init__(self, model_path: str, input_shapes, target, calibration: CalibrationData | None, metric: str,
                 eval_data, budget: Budget, objectives: tuple[str, ...], work_dir: Path, seed: int = 0):
        from effc.autosearch.quality import EvalData

        self.model_path, self.input_shapes, self.target = model_path, input_shapes, target
        self.calibration, self.budget, self.objectives, self.seed = calibration, budget, objectives, seed
        self.work_dir = work_dir
        self.original = load_model(model_path, input_shapes)
        self.eval = EvalData.load(eval_data, self.original)
        self.metric = Metric(metric, self.eval, self.original)
        self.baseline = self._measure_original()

    def context(self) -> Context:
        return Context(calibration=self.calibration, target=self.target, seed=self.seed)

    def _measure_original(self) -> Point:
        quality = self.metric(self.original)
        stats = model_stats(self.original)
        point = Point("default", {}, quality, 0.0, stats.file_bytes, stats.macs, feasible=True)
        if "latency" in self.objectives:
            point.artifact = str(self.work_dir / "original.effc")
            point.latency_ms = self._latency("default", Path(point.artifact))
        return point

    def _latency(self, spec: str, out: Path) -> float:
        import effc

        artifact = effc.compile(self.model_path, self.target, pipeline=spec, ctx=self.context(),
                                input_shapes=self.input_shapes, out=out)
        feeds = next(self.eval.inputs.batches(artifact_specs(artifact)))
        timings = artifact.runner.profile(artifact.ordered_inputs(feeds), repeat=LATENCY_REPEATS, warmup=3, kernels=False)
        return statistics.median(timings.latency_s) * 1e3

    def evaluate(self, spec: str, config: dict, trial: int) -> Point:
        model = load_model(self.model_path, self.input_shapes)  # as `effc compile` loads it: same names, same bytes
        PassManager(spec).run(model, self.context())
        quality = self.metric(model)
        stats = model_stats(model)
        drop = self.baseline.quality - quality
        point = Point(spec, config, quality, drop, stats.file_bytes, stats.macs, trial=trial,
                      feasible=self.budget.violation(quality, self.baseline.quality) <= 1e-12)
        folder = self.work_dir / f"trial-{trial:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        point.onnx = str(model.save(folder / "model.onnx"))
        if "latency" in self.objectives:
            if point.feasible:
                point.artifact = str(folder / f"model.{self.target.name}.effc")
                point.latency_ms = self._latency(spec, Path(point.artifact))
            else:  # not worth a compile: scale the original's latency by the MACs left
                base = self.baseline
                point.latency_ms = base.latency_ms * max(stats.macs, 1) / max(base.macs, 1)
                point.estimated = True
        return point

    def discard(self, point: Point) -> None:
        """Remove a point's files (it is not on the front)."""
        if point.trial is not None:
            shutil.rmtree(self.work_dir / f"trial-{point.trial:04d}", ignore_errors=True)
        point.onnx = point.artifact = None


def artifact_specs(artifact):
    import numpy as np

    from effc.ir import TensorSpec

    return [TensorSpec(s["name"], tuple(s["shape"]), np.dtype(s["dtype"])) for s in artifact.meta["inputs"]]


def finite(value: float | None) -> float:
    return value if value is not None and math.isfinite(value) else float("inf")
