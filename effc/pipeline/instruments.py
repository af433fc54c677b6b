"""Instruments: the only way to observe a pipeline run (after TVM's PassInstrument). The pass manager installs the
ones a Context asks for (verification, latency and drift columns); callers add their own (progress, dumps).

Verification and drift compare every pass with the pipeline's input through its outputs on a few feeds, computed
once when the pipeline starts: no copy of the model is kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from effc.errors import VerificationError


class Instrument:
    """Hooks around a pipeline run; override what you need. Instruments observe, passes act.

    `should_run` may veto a pass (it is then skipped, as a disabled one); `after_pass` sees the PassResult and the
    pass's seconds; `ctx.history`, `ctx.upcoming` and `ctx.in_fixpoint` tell where in the pipeline the pass is."""

    def before_pipeline(self, model, ctx) -> None: ...

    def should_run(self, p, ctx) -> bool:
        return True

    def before_pass(self, p, model, ctx) -> None: ...

    def after_pass(self, p, model, ctx, result, seconds: float) -> None: ...

    def after_pipeline(self, model, ctx) -> None: ...


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


class ReferenceOutputs:
    """The pipeline input's outputs on `samples` verification feeds (calibration samples, else random inputs)."""

    def __init__(self, model, ctx, samples: int):
        from effc.onnx_runtime import ort_session
        from effc.verify import run_reference, verification_feeds

        self.feeds = verification_feeds(model.input_specs(), ctx.calibration, samples, ctx.seed)
        self.outputs = run_reference(ort_session(model), self.feeds, model.input_specs(), random_feeds=ctx.calibration is None)

    @classmethod
    def of(cls, model, ctx, samples: int) -> "ReferenceOutputs":
        """Shared through ctx.cache by every instrument of this run that compares on `samples` feeds."""
        key = ("reference-outputs", samples)
        if key not in ctx.cache:
            ctx.cache[key] = cls(model, ctx, samples)
        return ctx.cache[key]

    def drift_of(self, model):
        from effc.onnx_runtime import compare_outputs, ort_session, run_session

        session = ort_session(model)
        return compare_outputs(self.outputs, [run_session(session, feed) for feed in self.feeds])


class VerifyLossless(Instrument):
    """After every lossless pass that changed the model, its outputs must match the pipeline input's within
    ctx.tolerance on ONNX Runtime; VerificationError names the pass and the pipeline so far."""

    def before_pipeline(self, model, ctx) -> None:
        self.reference = ReferenceOutputs.of(model, ctx, ctx.verify_samples)

    def after_pass(self, p, model, ctx, result, seconds) -> None:
        if not (result.changed and p.kind == "lossless"):
            return
        drift = self.reference.drift_of(model)
        if not drift.within(ctx.tolerance.atol, ctx.tolerance.rtol):
            raise VerificationError(
                f"lossless pass {p.name} changed the outputs: max abs error {drift.max_abs:.3g} "
                f"(scale {drift.scale:.3g}, tolerance {ctx.tolerance.atol:g} + {ctx.tolerance.rtol:g} x scale); "
                f"pipeline so far: {','.join([*ctx.history, p.spec()])}")


class LatencyColumn:
    """Ledger column `latency`: ONNX Runtime latency of the model after each pass."""

    field = "latency"

    def start(self, model, ctx) -> None: ...

    def measure(self, model, ctx):
        from effc.verify import latency_of

        return latency_of(model, ctx)


class DriftColumn:
    """Ledger column `drift`: output drift against the pipeline input after each pass."""

    field = "drift"

    def start(self, model, ctx) -> None:
        self.reference = ReferenceOutputs.of(model, ctx, ctx.drift_samples)

    def measure(self, model, ctx):
        return self.reference.drift_of(model)
