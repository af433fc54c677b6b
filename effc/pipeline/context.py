"""The one object a pass may read besides the model: data, target, seed, policies, cache, instruments."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from effc.calib import CalibrationData
from effc.pipeline.config import current_config

log = logging.getLogger("effc")


class Progress(Protocol):
    def advance(self, steps: int = 1) -> None: ...


class _NoProgress:
    def advance(self, steps: int = 1) -> None:
        pass


@dataclass
class Tolerance:
    """Outputs match when max abs error <= atol + rtol * (max abs of the reference output)."""

    atol: float = 1e-5
    rtol: float = 1e-4


@dataclass
class Context:
    """Everything a pass may need. Passes read it; only the pass manager and instruments write its bookkeeping.

    target: the `effc.targets.Target` record the pipeline feeds a compile for (a name is looked up), or None; passes
    read its features (`ctx.target.isa`). strict_checks / disabled_passes: None takes them from `pass_config`."""

    calibration: CalibrationData | None = None
    target: Any = None
    seed: int = 0
    verify: bool = False  # check lossless passes against the pipeline input on ONNX Runtime
    tolerance: Tolerance = field(default_factory=Tolerance)
    verify_samples: int = 4  # calibration samples (or random feeds) used by verification
    measure_latency: bool = False
    latency_repeats: int = 20
    measure_drift: bool = False  # drift against the pipeline input after every pass
    drift_samples: int = 32
    allow_random_calibration: bool = False
    strict_checks: bool | None = None  # the ONNX checker after every pass, besides the structure check
    disabled_passes: tuple[str, ...] = ()  # skipped wherever the pipeline names them
    instruments: list[Any] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)
    reports: dict[str, Any] = field(default_factory=dict)  # per-pass reports (e.g. int8 sensitivity), keyed by pass name
    warnings: list[str] = field(default_factory=list)
    # Set by the pass manager around each pass: specs of the passes already run, names of those still to come
    # (cluster snaps its codebook to the int8 grid when int8 follows; passes refuse orders that make no sense),
    # and whether the pass runs inside a fixpoint group.
    history: list[str] = field(default_factory=list)
    upcoming: list[str] = field(default_factory=list)
    in_fixpoint: bool = False
    progress_factory: Callable[[str, int | None], contextlib.AbstractContextManager[Progress]] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.target, str):
            from effc.targets import get_target

            self.target = get_target(self.target)

    def strict(self) -> bool:
        return current_config().strict_checks if self.strict_checks is None else self.strict_checks

    def skipped_passes(self) -> tuple[str, ...]:
        return (*current_config().disabled_passes, *self.disabled_passes)

    def isa(self):
        """What the kernels that will run the model may use: the target's ISA, else ONNX Runtime's on this machine."""
        if self.target is not None:
            return self.target.isa
        from effc.targets import host_isa

        return host_isa()

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning(message)

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None = None) -> Iterator[Progress]:
        """A progress bar in the CLI; silent through the API unless the caller installs a factory."""
        if self.progress_factory is None:
            yield _NoProgress()
        else:
            with self.progress_factory(description, total) as bar:
                yield bar

    def rng(self, salt: str = "") -> np.random.Generator:
        """A generator seeded from the context seed (and a per-use salt, so passes don't share streams)."""
        return np.random.default_rng([self.seed, *salt.encode()])
