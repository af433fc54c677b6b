"""Compilation backends, by the name a target record gives (`target.backend`): `ort` (ort.py) and `tvm` (tvm/).

Backends register as "module:class" and are imported on first use, so `effc run` of an ORT artifact never imports
TVM's compiler.
"""

from __future__ import annotations

import importlib

from effc.backends.base import Backend, Compiled
from effc.errors import EffcError

__all__ = ["Backend", "Compiled", "get_backend", "register_backend"]

_BACKENDS: dict[str, str] = {"tvm": "effc.backends.tvm.backend:TVMBackend", "ort": "effc.backends.ort:ORTBackend"}


def register_backend(name: str, where: str) -> None:
    """Add a backend by "module:class"; raises on a duplicate name."""
    if name in _BACKENDS:
        raise ValueError(f"backend {name!r} is already registered")
    _BACKENDS[name] = where


def get_backend(name: str) -> Backend:
    if name not in _BACKENDS:
        raise EffcError(f"unknown backend {name!r}; known: {', '.join(_BACKENDS)}")
    module, _, cls = _BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()
