"""Compare models on ONNX Runtime: drift between a reference and a candidate, and latency."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from effc.calib import CalibrationData
from effc.errors import EffcError
from effc.ir import Model, TensorSpec
from effc.onnx_runtime import Drift, Latency, compare_outputs, measure_latency, ort_session, random_inputs, run_session
from effc.pipeline.context import Context

# Symbolic dims take two different values, so a rewrite that only holds for one size is caught.
DYNAMIC_DIM_VALUES = (2, 5)


def verification_feeds(specs: Sequence[TensorSpec], calibration: CalibrationData | None, samples: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Feeds to compare models on: calibration samples when there are some, else random inputs at two sizes."""
    if calibration is not None:
        return list(calibration.batches(specs, limit=samples))
    return [random_inputs(specs, seed=seed + i, dim_value=v) for i, v in enumerate(DYNAMIC_DIM_VALUES)]


def latency_of(model: Model, ctx: Context) -> Latency:
    feeds = verification_feeds(model.input_specs(), ctx.calibration, 1, ctx.seed)[0]
    return measure_latency(ort_session(model), feeds, repeat=ctx.latency_repeats)


def compare_models(reference: Model, candidate: Model, inputs: CalibrationData | None = None, *, samples: int = 8, seed: int = 0) -> Drift:
    """Drift of `candidate` against `reference`, on `inputs` or on random inputs of the right shapes."""
    ref_specs = {s.name: s for s in reference.input_specs()}
    cand_specs = {s.name: s for s in candidate.input_specs()}
    if set(ref_specs) != set(cand_specs):
        raise EffcError(f"the models have different inputs: {sorted(ref_specs)} vs {sorted(cand_specs)}")
    ref_out = [s.name for s in reference.output_specs()]
    cand_out = [s.name for s in candidate.output_specs()]
    if sorted(ref_out) != sorted(cand_out):
        raise EffcError(f"the models have different outputs: {ref_out} vs {cand_out}")
    for name, spec in ref_specs.items():
        other = cand_specs[name]
        if spec.dtype != other.dtype:
            raise EffcError(f"input {name!r} is {spec.dtype} in the reference but {other.dtype} in the candidate")
    specs = list(ref_specs.values())
    feeds = verification_feeds(specs, inputs, samples, seed)
    ref_session, cand_session = ort_session(reference), ort_session(candidate)
    return compare_outputs([run_session(ref_session, f) for f in feeds], [run_session(cand_session, f) for f in feeds])
