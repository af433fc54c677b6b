"""The result of a search: the Pareto-optimal points within the budget, the original model, and their files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from effc.autosearch.trial import Point, finite
from effc.fileio import write_bytes_atomic


def dominates(a: Point, b: Point, objectives: tuple[str, ...]) -> bool:
    """a is no worse than b on every objective and quality, and better on one of them."""
    pairs = [(finite(a.objective(o)), finite(b.objective(o))) for o in objectives] + [(-a.quality, -b.quality)]
    return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)


def pareto(points: list[Point], objectives: tuple[str, ...]) -> list[Point]:
    feasible = [p for p in points if p.feasible and not p.estimated]
    front = [p for p in feasible if not any(dominates(q, p, objectives) for q in feasible if q is not p)]
    unique: dict[str, Point] = {}
    for point in sorted(front, key=lambda p: (finite(p.objective(objectives[0])), -p.quality)):
        unique.setdefault(point.spec, point)
    return list(unique.values())


@dataclass
class Front:
    model: str
    target: str
    budget: str
    metric: str
    objectives: tuple[str, ...]
    original: Point
    points: list[Point]  # the front, best first (by the first objective)
    trials: list[Point] = field(default_factory=list)  # every measured trial
    seconds: float = 0.0
    study: str = ""
    storage: str = ""

    @property
    def best(self) -> Point | None:
        return self.points[0] if self.points else None

    def to_json(self) -> dict:
        return {"model": self.model, "target": self.target, "budget": self.budget, "metric": self.metric,
                "objectives": list(self.objectives), "original": self.original.to_json(),
                "front": [p.to_json() for p in self.points], "trials": [p.to_json() for p in self.trials],
                "seconds": round(self.seconds, 1), "study": self.study, "storage": self.storage}

    def save(self, folder: Path) -> None:
        write_bytes_atomic(folder / "front.json", json.dumps(self.to_json(), indent=1).encode())
        self.plot(folder / "front.png")

    def plot(self, path: Path) -> None:
        """The first two objectives (or the first against quality), every trial in grey, the front joined."""
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        x_name = self.objectives[0]
        y_name = self.objectives[1] if len(self.objectives) > 1 else "quality"

        def value(point: Point, name: str) -> float:
            return point.quality if name == "quality" else finite(point.objective(name))

        figure, axes = plt.subplots(figsize=(7, 5))
        measured = [p for p in self.trials if not p.estimated]
        axes.scatter([value(p, x_name) for p in measured], [value(p, y_name) for p in measured], c="#bbbbbb",
                     label="trials", s=18)
        front = sorted(self.points, key=lambda p: value(p, x_name))
        axes.plot([value(p, x_name) for p in front], [value(p, y_name) for p in front], "o-", c="#1f5fbf",
                  label=f"front within {self.budget}")
        axes.scatter([value(self.original, x_name)], [value(self.original, y_name)], marker="*", s=160, c="#d62728",
                     label="original", zorder=3)
        units = {"latency": "latency (ms)", "size": "size (bytes)", "macs": "MACs", "flash": "flash (bytes)",
                 "ram": "static RAM (bytes)", "quality": f"{self.metric}"}
        axes.set_xlabel(units.get(x_name, x_name))
        axes.set_ylabel(units.get(y_name, y_name))
        if x_name in ("size", "macs", "latency", "flash", "ram"):
            axes.set_xscale("log")
        if y_name in ("size", "macs", "latency", "flash", "ram"):
            axes.set_yscale("log")  # latency outliers of a loaded machine would flatten the rest
        axes.set_title(f"{Path(self.model).name} on {self.target}")
        axes.legend()
        figure.tight_layout()
        tmp = path.with_name(f".{path.name}.tmp.png")
        figure.savefig(tmp, dpi=110)
        plt.close(figure)
        tmp.replace(path)
