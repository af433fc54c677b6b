"""Compare models on ONNX Runtime: drift between a reference and a candidate, and latency."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from effc.calib import CalibrationData
from effc.errors import EffcError
from effc.ir import Model, TensorSpec
from effc.onnx_runtime import Drift, Latency, compare_outputs, measure_latency, ort_session, random_inputs, run_session
from effc.pipeline.context import Context

# Symbolic dims take two different values, so a rewrite that only holds for one size is caught.
DYNAMIC_DIM_VALUES = (2, 5)
# The spatial dims of an image (rank 4, dims 2 and 3) take sizes a detector's strides divide, the batch dim small ones.
DYNAMIC_IMAGE_SIZES = (64, 96)
DYNAMIC_BATCH_SIZES = (1, 2)


def verification_feeds(specs: Sequence[TensorSpec], calibration: CalibrationData | None, samples: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Feeds to compare models on: calibration samples when there are some, else random inputs at two sizes."""
    if calibration is not None:
        return list(calibration.batches(specs, limit=samples))
    return [random_inputs([_sized(s, i) for s in specs], seed=seed + i) for i in range(len(DYNAMIC_DIM_VALUES))]


def _sized(spec: TensorSpec, which: int) -> TensorSpec:
    if spec.is_static:
        return spec
    shape = spec.shape or ()

    def size(axis: int, dim) -> int:
        if isinstance(dim, int):
            return dim
        if len(shape) == 4 and axis >= 2:
            return DYNAMIC_IMAGE_SIZES[which]
        if len(shape) >= 3 and axis == 0:
            return DYNAMIC_BATCH_SIZES[which]
        return DYNAMIC_DIM_VALUES[which]

    return TensorSpec(spec.name, tuple(size(a, d) for a, d in enumerate(shape)), spec.dtype)


def unpinned_dims(specs: Sequence[TensorSpec]) -> list[str]:
    """`input[axis]=name` for every symbolic dim of these inputs."""
    return [f"{s.name}[{axis}]={d}" for s in specs for axis, d in enumerate(s.shape or ()) if not isinstance(d, int)]


def run_reference(session, feeds: Sequence[Mapping[str, np.ndarray]], specs: Sequence[TensorSpec], *,
                  random_feeds: bool = False) -> list[dict[str, np.ndarray]]:
    """The reference model's outputs on `feeds`. When ONNX Runtime cannot run it at the sizes chosen for unpinned
    dims, EffcError names the dims to pin with --input-shape (the model's fault is not ours); on `random_feeds` at
    static sizes, it asks for real inputs (a sample rate or token ids can only take some values)."""
    outputs = []
    for feed in feeds:
        try:
            outputs.append(run_session(session, feed))
        except Exception as exc:  # ORT's own error types (Fail, InvalidArgument, RuntimeException)
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            dims = unpinned_dims(specs)
            if not dims:
                hint = ("; these inputs were random: give real ones (--calib DATA.npz for optimize, --inputs for verify "
                        "and profile)") if random_feeds else ""
                raise EffcError(f"ONNX Runtime cannot run the model on inputs of shapes "
                                f"{ {k: list(v.shape) for k, v in feed.items()} }: {reason}{hint}") from None
            tried = ", ".join(f"{k}={'x'.join(map(str, v.shape))}" for k, v in feed.items())
            raise EffcError(f"ONNX Runtime cannot run the model at the sizes chosen for its unpinned dims "
                            f"{', '.join(dims)} ({tried}): pin them with --input-shape NAME=D0,D1,...; ORT said: {reason}") from None
    return outputs


def check_same_inputs(ours: Sequence[TensorSpec], theirs: Sequence[TensorSpec], what: str) -> None:
    """EffcError naming the first input (name, rank, static dim or dtype) in which `theirs` differs from `ours`."""
    mine, other = {s.name: s for s in ours}, {s.name: s for s in theirs}
    if set(mine) != set(other):
        raise EffcError(f"the models have different inputs: {what} takes {sorted(other)}, not {sorted(mine)}")
    for name, spec in mine.items():
        them = other[name]
        if spec.dtype != them.dtype:
            raise EffcError(f"input {name!r} is {spec.dtype} in the reference but {them.dtype} in {what}")
        if spec.shape is not None and them.shape is not None and (
                len(spec.shape) != len(them.shape)
                or any(isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(spec.shape, them.shape))):
            raise EffcError(f"input {name!r} has shape {list(spec.shape)} in the reference but {list(them.shape)} in {what}")


def latency_of(model: Model, ctx: Context) -> Latency:
    feeds = verification_feeds(model.input_specs(), ctx.calibration, 1, ctx.seed)[0]
    return measure_latency(ort_session(model), feeds, repeat=ctx.latency_repeats)


def compare_models(reference: Model, candidate: Model, inputs: CalibrationData | None = None, *, samples: int = 8, seed: int = 0) -> Drift:
    """Drift of `candidate` against `reference`, on `inputs` or on random inputs of the right shapes."""
    check_same_inputs(reference.input_specs(), candidate.input_specs(), "the candidate")
    ref_specs = {s.name: s for s in reference.input_specs()}
    ref_out = [s.name for s in reference.output_specs()]
    cand_out = [s.name for s in candidate.output_specs()]
    if sorted(ref_out) != sorted(cand_out):
        raise EffcError(f"the models have different outputs: {ref_out} vs {cand_out}")
    specs = list(ref_specs.values())
    feeds = verification_feeds(specs, inputs, samples, seed)
    ref_session, cand_session = ort_session(reference), ort_session(candidate)
    random_feeds = inputs is None
    return compare_outputs(run_reference(ref_session, feeds, specs, random_feeds=random_feeds),
                           run_reference(cand_session, feeds, specs, random_feeds=random_feeds))
