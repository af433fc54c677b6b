"""Quality of a model on evaluation data: top-1 accuracy against labels, top-1 agreement with the original model, or
a user's metric (`module:function`, called with the model's outputs and the evaluation arrays, higher is better)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from effc.calib import CalibrationData
from effc.errors import EffcError
from effc.ir import Model
from effc.onnx_runtime import ort_session, run_session


@dataclass
class EvalData:
    """Inputs keyed by the model's input names (first axis = samples) and, when the file has them, `labels`."""

    inputs: CalibrationData
    labels: np.ndarray | None
    arrays: dict[str, np.ndarray]
    path: str

    @classmethod
    def load(cls, path: str | Path, model: Model) -> "EvalData":
        data = CalibrationData.load(path)
        data.bind(model.input_specs())  # a mismatch is one clear error, before any trial
        arrays = {}
        if Path(path).is_file():
            with np.load(path, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        return cls(data, arrays.get("labels"), arrays, str(path))


def outputs_on(model: Model, data: EvalData) -> list[dict[str, np.ndarray]]:
    session = ort_session(model)
    return [run_session(session, feeds) for feeds in data.inputs.batches(model.input_specs())]


def first_output(batches: list[dict[str, np.ndarray]]) -> np.ndarray:
    return np.concatenate([next(iter(b.values())).reshape(-1, next(iter(b.values())).shape[-1]) for b in batches])


class Metric:
    """quality(model) -> float in [0, 1] for the ones effc knows, higher is better."""

    def __init__(self, name: str, data: EvalData, original: Model):
        self.name, self.data = name, data
        self._reference = None
        if name == "top1":
            if data.labels is None:
                raise EffcError(f"--metric top1 needs labels: {data.path} has no 'labels' array (use --metric agreement)")
            self._function: Callable = self._top1
        elif name == "agreement":
            self._reference = first_output(outputs_on(original, data)).argmax(-1)
            self._function = self._agreement
        elif ":" in name:
            module, _, attr = name.partition(":")
            try:
                self._function = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as exc:
                raise EffcError(f"--metric {name}: cannot import it ({exc})") from None
            self._custom = True
        else:
            raise EffcError(f"--metric {name!r}: expected top1, agreement or module:function")

    def __call__(self, model: Model) -> float:
        outputs = outputs_on(model, self.data)
        if self._function in (self._top1, self._agreement):
            return float(self._function(outputs))
        merged = {k: np.concatenate([b[k] for b in outputs]) for k in outputs[0]}
        return float(self._function(merged, self.data.arrays))

    def _top1(self, outputs) -> float:
        predicted = first_output(outputs).argmax(-1)
        labels = self.data.labels.reshape(-1)[: len(predicted)]
        return float(np.mean(predicted == labels))

    def _agreement(self, outputs) -> float:
        return float(np.mean(first_output(outputs).argmax(-1) == self._reference))
