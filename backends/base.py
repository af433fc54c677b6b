"""The backend interface: compile an effc model into an artifact folder for a target, and load one to run it.

A backend writes its files into the artifact folder and returns what effc.json must say about them; effc.artifact
writes effc.json, hashes the files and makes the folder appear atomically. A runner runs the loaded artifact.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from effc.ir import Model
from effc.backends.targets import Target


@dataclass
class Compiled:
    """What a backend wrote: the library file (relative to the folder), the parameters file, and backend extras."""

    library: str
    params: str | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Timings:
    """What a profiling run measured. latency_s: end-to-end seconds per call. kernels_s: seconds per called function
    per run (None when the runner cannot instrument). sequence: function names in call order, in one run."""

    outputs: list[np.ndarray]
    latency_s: list[float]
    kernels_s: dict[str, list[float]] | None = None
    sequence: list[str] = field(default_factory=list)


class Runner(ABC):
    """A loaded artifact. Inputs and outputs are numpy arrays in the order of effc.json's inputs/outputs."""

    emulated: bool = False  # timings come from an emulator (qemu), not the real CPU
    where: str = "this machine"

    @abstractmethod
    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]: ...

    @abstractmethod
    def profile(self, inputs: list[np.ndarray], *, repeat: int, warmup: int, kernels: bool) -> Timings: ...


class Backend(ABC):
    """A code generator. `name` is what effc.json records; targets name their backend."""

    name: str

    @abstractmethod
    def compile(self, model: Model, target: Target, out_dir: Path, *, progress: Callable[[str], None] | None = None) -> Compiled:
        """Write the artifact's files for `model` (static shapes) into `out_dir`; EffcError for models it refuses."""

    @abstractmethod
    def load(self, folder: Path, meta: dict, *, rpc: str | None = None) -> Runner:
        """A runner for an artifact folder whose effc.json is `meta`; `rpc` is HOST:PORT of a TVM RPC server."""


# name -> "module:class"; imported on first use so that `effc run` of an ORT artifact never imports TVM's compiler.
_BACKENDS: dict[str, str] = {"tvm": "effc.backends.tvm_backend:TVMBackend", "ort": "effc.backends.ort_backend:ORTBackend"}


def register_backend(name: str, where: str) -> None:
    """Add a backend by "module:class"; raises on a duplicate name."""
    if name in _BACKENDS:
        raise ValueError(f"backend {name!r} is already registered")
    _BACKENDS[name] = where


def get_backend(name: str) -> Backend:
    import importlib

    from effc.errors import EffcError

    if name not in _BACKENDS:
        raise EffcError(f"unknown backend {name!r}; known: {', '.join(_BACKENDS)}")
    module, _, cls = _BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()
