"""Pass-manager configuration for a scope, after TVM's PassContext: `with pass_config(strict_checks=True): ...`.

What a `Context` leaves unset (None) comes from here; tests turn the strict checks on for every pipeline they run.
"""

from __future__ import annotations

import contextlib
import dataclasses
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator


@dataclass(frozen=True)
class PassConfig:
    """strict_checks: run the ONNX checker after every pass (the structure check always runs).
    disabled_passes: pass names the pass manager skips wherever a pipeline names them."""

    strict_checks: bool = False
    disabled_passes: tuple[str, ...] = ()


_CURRENT: ContextVar[PassConfig] = ContextVar("effc_pass_config", default=PassConfig())


def current_config() -> PassConfig:
    return _CURRENT.get()


@contextlib.contextmanager
def pass_config(**changes) -> Iterator[PassConfig]:
    """Within the block, pipelines run with these settings changed (see PassConfig)."""
    config = dataclasses.replace(_CURRENT.get(), **changes)
    token = _CURRENT.set(config)
    try:
        yield config
    finally:
        _CURRENT.reset(token)
