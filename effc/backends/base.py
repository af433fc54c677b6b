"""The backend interface: check a model before any pass runs, then compile it into an artifact folder for a target.

A backend writes its files into the artifact folder and returns what effc.json must say about them; effc.artifact
writes effc.json, hashes the files and makes the folder appear atomically. Running an artifact is the runners'
business (effc.runners), so loading one never imports a compiler.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from effc.ir import Model
from effc.targets import Target


@dataclass
class Compiled:
    """What a backend wrote: the library file (relative to the folder), the parameters file, and backend extras."""

    library: str
    params: str | None = None
    extra: dict = field(default_factory=dict)


class Backend(ABC):
    """A code generator. `name` is what effc.json records; targets name their backend."""

    name: str

    def check(self, model: Model, target: Target) -> None:
        """EffcError for a model this backend will refuse (unsupported ops, unpinned dims), before any pass runs."""

    @abstractmethod
    def compile(self, model: Model, target: Target, out_dir: Path, *, progress: Callable[[str], None] | None = None,
                tuning_db: str | None = None) -> Compiled:
        """Write the artifact's files for `model` (static shapes) into `out_dir`; EffcError for models it refuses."""
