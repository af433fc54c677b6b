"""One point of the search measured the way a user would: the passes of its spec, quality on the evaluation data
(on ONNX Runtime), size and MACs of the model, and, for points within the budget, an artifact compiled with
`effc.compile` for the target and timed there (on a microcontroller: emulated instructions, 1 ns each, and the flash
and static RAM of the built image). Points outside the budget get MAC- and size-scaled estimates instead of a
compile (cheap proxies first)."""

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

OBJECTIVES = ("latency", "size", "macs", "flash", "ram")
MCU_OBJECTIVES = ("flash", "ram")  # bytes of the image built for a microcontroller target
LATENCY_REPEATS = 20
MCU_REPEATS = 2


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
    flash_bytes: int | None = None
    ram_bytes: int | None = None
    estimated: bool = False
    feasible: bool = False
    trial: int | None = None
    onnx: str | None = None
    artifact: str | None = None
    extra: dict = field(default_factory=dict)

    def objective(self, name: str) -> float:
        return {"latency": self.latency_ms, "size": self.size_bytes, "macs": self.macs, "flash": self.flash_bytes,
                "ram": self.ram_bytes}[name]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


class Evaluator:
    """Measures configurations of one model for one target against one budget."""

    def __init__(self, model_path: str, input_shapes, target, calibration: CalibrationData | None, metric: str,
                 eval_data, budget: Budget, objectives: tuple[str, ...], work_dir: Path, seed: int = 0):
        from effc.autosearch.quality import EvalData

        from effc.errors import EffcError

        mcu_only = [o for o in objectives if o in MCU_OBJECTIVES]
        if mcu_only and target.lowering != "mcu":
            raise EffcError(f"--objective {mcu_only[0]} measures a microcontroller image: give --target cortex-m4 (or "
                            f"another Cortex-M target), not {target.name}")
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
        if self._needs_artifact():
            point.artifact = str(self.work_dir / "original.effc")
            self._measure_artifact(point, Path(point.artifact))
        return point

    def _needs_artifact(self) -> bool:
        return any(o in ("latency", *MCU_OBJECTIVES) for o in self.objectives)

    def _measure_artifact(self, point: Point, out: Path) -> None:
        """Compile `point.spec` for the target into `out`; time it there (latency), and for a microcontroller read
        the built image's flash (.text, .rodata, .data) and static RAM (.data, .bss: the arena and the I/O buffers)."""
        import effc

        artifact = effc.compile(self.model_path, self.target, pipeline=point.spec, ctx=self.context(),
                                input_shapes=self.input_shapes, out=out)
        if "latency" in self.objectives:
            feeds = next(self.eval.inputs.batches(artifact_specs(artifact)))
            repeat = MCU_REPEATS if self.target.lowering == "mcu" else LATENCY_REPEATS  # emulated counts repeat exactly
            timings = artifact.runner.profile(artifact.ordered_inputs(feeds), repeat=repeat, warmup=3, kernels=False)
            point.latency_ms = statistics.median(timings.latency_s) * 1e3
        if any(o in MCU_OBJECTIVES for o in self.objectives):
            from effc.profile.mcu import elf_sections, memory_of
            from effc.runners.qemu_system_arm import build_elf

            flash, ram = memory_of(elf_sections(build_elf(out)), 0)
            point.flash_bytes, point.ram_bytes = flash["total"], ram["data"] + ram["bss"]

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
        if self._needs_artifact():
            if point.feasible:
                point.artifact = str(folder / f"model.{self.target.name}.effc")
                self._measure_artifact(point, Path(point.artifact))
            else:  # not worth a compile: scale the original's figures by the MACs (latency) and bytes (flash) left
                base = self.baseline
                if base.latency_ms is not None:
                    point.latency_ms = base.latency_ms * max(stats.macs, 1) / max(base.macs, 1)
                if base.flash_bytes is not None:
                    point.flash_bytes = round(base.flash_bytes * stats.file_bytes / max(base.size_bytes, 1))
                    point.ram_bytes = base.ram_bytes
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
