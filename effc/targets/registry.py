"""The one place a target is found by its name: `--target NAME [--cpu CPU]` -> a `Target` record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from effc.errors import EffcError
from effc.targets.record import Target


@dataclass(frozen=True)
class TargetEntry:
    """A registered name: `make(cpu)` builds its record (a board's fixed record ignores no choice: it refuses any
    --cpu but its own); `cpus()` lists the CPU models --cpu takes (empty: none)."""

    name: str
    make: Callable[[str | None], Target]
    cpus: Callable[[], list[str]]
    description: str = ""


_TARGETS: dict[str, TargetEntry] = {}


def register_target(target: Target | str, make: Callable[[str | None], Target] | None = None, *,
                    cpus: Callable[[], list[str]] | None = None) -> None:
    """Add a board as one record, `register_target(Target(...))`, or a family whose record depends on --cpu,
    `register_target(name, make, cpus=...)`. Raises ValueError on a duplicate name."""
    if isinstance(target, Target):
        record = target
        entry = TargetEntry(record.name, lambda cpu: _fixed(record, cpu), lambda: [record.cpu] if record.cpu else [],
                            record.description)
    else:
        if make is None:
            raise ValueError(f"target {target!r}: give a Target record, or a name and make(cpu)")
        entry = TargetEntry(target, make, cpus or (lambda: []), (make.__doc__ or "").strip().splitlines()[0] if make.__doc__ else "")
    if entry.name in _TARGETS:
        raise ValueError(f"target {entry.name!r} is already registered")
    _TARGETS[entry.name] = entry


def _fixed(record: Target, cpu: str | None) -> Target:
    if cpu is not None and cpu != record.cpu:
        raise EffcError(f"--target {record.name} is one board ({record.cpu or 'no CPU choice'}): --cpu {cpu} does not apply")
    return record


def unregister_target(name: str) -> None:
    _TARGETS.pop(name, None)


def registered_targets() -> dict[str, TargetEntry]:
    return dict(_TARGETS)


def get_target(name: str | Target, cpu: str | None = None) -> Target:
    """The record for `--target NAME [--cpu CPU]` (a record is returned as it is); EffcError names the known targets
    when NAME is unknown, and the known CPUs when CPU is."""
    if isinstance(name, Target):
        if cpu is not None and cpu != name.cpu:
            raise EffcError(f"target {name.name} is already a record for cpu {name.cpu}; --cpu {cpu} does not apply")
        return name
    if name not in _TARGETS:
        raise EffcError(f"unknown target {name!r}; known: {', '.join(_TARGETS)}")
    return _TARGETS[name].make(cpu)
