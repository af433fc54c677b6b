"""Compile targets, found by name in one registry (`effc targets` lists them).

A target is a record (`Target`, record.py): backend, lowering, device kind, how it runs, the TVM target, the ISA its
kernels may use and a board's memory. Passes and schedule rules read `target.isa`, never the name. A board is one
`register_target(Target(...))`; a family whose record depends on `--cpu` registers `make(cpu) -> Target`
(cpu.py: `x86`, `arm`; ort.py: `ort`).
"""

from effc.targets import cpu, cuda, mcu, ort  # noqa: F401  (importing them registers the built-in targets)
from effc.targets.cpu import ARM_CPUS, host_machine, host_x86_features
from effc.targets.ort import host_isa
from effc.targets.record import ISA, Memory, Target
from effc.targets.registry import TargetEntry, get_target, register_target, registered_targets, unregister_target

__all__ = ["ISA", "Memory", "Target", "TargetEntry", "get_target", "register_target", "registered_targets",
           "unregister_target", "ARM_CPUS", "host_machine", "host_x86_features", "host_isa"]
