"""The TVM (Relax) backend (backend.py): the ONNX frontend (frontend.py), then the lowering module a target record
names (`target.lowering`: cpu/), and MetaSchedule tuning (tuning.py).

A lowering module provides `prepare(mod, params, target)` and `relax_pipeline(target, tuning_db=)` (the backend
runs tvm.compile here and exports model.so and params.npz), or its own `build(model, target, out_dir, *, progress,
tuning_db) -> Compiled` when the library cannot be built that way (cuda/: in a child process that loads TVM's CUDA
runtime); and for tuning `task_passes(target)` (the passes up to the tuning tasks) and `default_schedule(func,
target)` (the schedule a tuning candidate must beat). Adding a target family is one record type plus one such module.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from effc.errors import EffcError


def get_lowering(target) -> ModuleType:
    """The lowering module for a TVM target record: effc.backends.tvm.<target.lowering>.lowering."""
    if not target.lowering:
        raise EffcError(f"target {target.name} names no TVM lowering")
    try:
        return importlib.import_module(f"effc.backends.tvm.{target.lowering}.lowering")
    except ModuleNotFoundError:
        raise EffcError(f"target {target.name}: no TVM lowering named {target.lowering!r}") from None
