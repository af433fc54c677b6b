"""What a runner is: a loaded artifact that runs inputs to outputs, and profiles itself."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Timings:
    """What a profiling run measured. latency_s: end-to-end seconds per call. kernels_s: seconds per called function
    per run (None when the runner cannot instrument). sequence: function names in call order, in one run.
    instrumented_s: end-to-end seconds of each instrumented run, the runs kernels_s comes from."""

    outputs: list[np.ndarray]
    latency_s: list[float]
    kernels_s: dict[str, list[float]] | None = None
    sequence: list[str] = field(default_factory=list)
    instrumented_s: list[float] = field(default_factory=list)


class Runner(ABC):
    """A loaded artifact. Inputs and outputs are numpy arrays in the order of effc.json's inputs/outputs."""

    emulated: bool = False  # timings come from an emulator (qemu), not the real CPU
    where: str = "this machine"

    @abstractmethod
    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]: ...

    @abstractmethod
    def profile(self, inputs: list[np.ndarray], *, repeat: int, warmup: int, kernels: bool) -> Timings: ...
