"""Running an ORT artifact (`--target ort`): the ONNX model on ONNX Runtime's CPU provider."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from effc.runners.base import Runner, Timings


class ORTRunner(Runner):
    def __init__(self, path: Path, input_names: list[str]):
        from effc.onnx_runtime import ort_session

        self.session = ort_session(str(path))
        self.input_names = input_names
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.output_names, dict(zip(self.input_names, inputs)))

    def profile(self, inputs, *, repeat, warmup, kernels) -> Timings:
        outputs = self(inputs)
        for _ in range(warmup):
            self(inputs)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            self(inputs)
            times.append(time.perf_counter() - start)
        return Timings(outputs, times)
