"""Telling the environment's failures (no permission, read-only or full disk) from effc's own bugs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

from effc.fileio import ENVIRONMENT_ERRNOS, attempted_outputs

NEARLY_FULL_BYTES = 1 << 20


def environment_error(exc: OSError) -> str | None:
    """A one-line message for an OS error the user's environment caused, or None for one that is effc's bug."""
    if exc.errno not in ENVIRONMENT_ERRNOS:
        return None
    where = exc.filename if exc.filename is not None else "a file"
    return f"cannot use {where}: {exc.strerror or exc}"


def full_output_location(ctx: click.Context) -> str | None:
    """The output location (or the temporary folder, where TVM builds) that has no space left, if any: TVM reports a
    full disk as `RuntimeError: Compilation error:` with an empty message."""
    for place in [*attempted_outputs, Path(tempfile.gettempdir())]:
        existing = Path(place)
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        try:
            st = os.statvfs(existing)
        except OSError:
            continue
        if st.f_bavail * st.f_frsize < NEARLY_FULL_BYTES:
            return str(place)
    return None
