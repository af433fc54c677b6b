"""The ONNX Runtime backend (`--target ort`): the artifact holds the model as ORT's basic optimizations leave it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from effc.backends.base import Backend, Compiled, Runner, Timings
from effc.errors import EffcError
from effc.ir import Model

LIBRARY = "model.onnx"


class ORTBackend(Backend):
    name = "ort"

    def compile(self, model: Model, target, out_dir: Path, *, progress=None) -> Compiled:
        """Run ORT's portable (basic) graph optimizations and save the result; extended ones are CPU-specific."""
        if progress:
            progress("optimizing with ONNX Runtime")
        source = out_dir / "source.onnx"
        model.save(source)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(out_dir / LIBRARY)
        try:
            ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for graphs it cannot load
            raise EffcError(f"ONNX Runtime cannot load the model: {str(exc).splitlines()[0][:300]}") from None
        source.unlink()
        from effc.profiler import peak_activation_bytes

        return Compiled(LIBRARY, None, {"weight_bytes": int(sum(c.values.nbytes for c in model.constants())),
                                        "peak_activation_bytes": peak_activation_bytes(model)})

    def load(self, folder: Path, meta: dict, *, rpc: str | None = None) -> Runner:
        if rpc:
            raise EffcError("--rpc runs TVM artifacts; an ORT artifact runs wherever ONNX Runtime is installed")
        return ORTRunner(Path(folder) / meta["library"], [spec["name"] for spec in meta["inputs"]])


class ORTRunner(Runner):
    def __init__(self, path: Path, input_names: list[str]):
        from effc.runtime import ort_session

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
