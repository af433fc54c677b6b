"""The ONNX Runtime backend (`--target ort`): the artifact holds the model as ORT's basic optimizations leave it."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from effc.backends.base import Backend, Compiled
from effc.errors import EffcError
from effc.ir import Model
from effc.ir.metrics import peak_activation_bytes

LIBRARY = "model.onnx"


class ORTBackend(Backend):
    name = "ort"

    def compile(self, model: Model, target, out_dir: Path, *, progress=None, tuning_db=None) -> Compiled:
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
        return Compiled(LIBRARY, None, {"weight_bytes": int(sum(c.values.nbytes for c in model.constants())),
                                        "peak_activation_bytes": peak_activation_bytes(model)})
