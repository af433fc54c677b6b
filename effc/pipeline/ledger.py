"""The ledger: one row per pass (size, MACs, time, and the columns asked for), recorded by an instrument."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from effc.ir.metrics import ModelStats, model_stats
from effc.onnx_runtime import Drift, Latency
from effc.pipeline.instruments import Instrument


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


class Column(Protocol):
    """A measured ledger column: `field` names the LedgerRow attribute it fills."""

    field: str

    def start(self, model, ctx) -> None: ...

    def measure(self, model, ctx) -> Any: ...


class LedgerRecorder(Instrument):
    """Records the ledger: a row for the input, then one per pass (inside a fixpoint group only when it changed)."""

    def __init__(self, pipeline: str, columns: Sequence[Column] = ()):
        self.ledger = Ledger(pipeline)
        self.columns = list(columns)

    def before_pipeline(self, model, ctx) -> None:
        for column in self.columns:
            column.start(model, ctx)
        self._record("input", "-", False, 0.0, model, ctx, {})

    def after_pass(self, p, model, ctx, result, seconds) -> None:
        if result.changed or not ctx.in_fixpoint:
            self._record(p.spec(), p.kind, result.changed, seconds, model, ctx, result.stats)

    def _record(self, step, kind, changed, seconds, model, ctx, stats) -> None:
        row = LedgerRow(step, kind, changed, seconds, model_stats(model), dict(stats))
        for column in self.columns:
            setattr(row, column.field, column.measure(model, ctx))
        self.ledger.rows.append(row)
