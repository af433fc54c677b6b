"""How an artifact runs: in this process (native), under an emulator (qemu-aarch64), over TVM RPC, or on ONNX
Runtime. `load_runner` picks one from the artifact's target record and this machine."""

from __future__ import annotations

from pathlib import Path

from effc.errors import EffcError
from effc.runners.base import Runner, Timings
from effc.runners.vm_runner import use_all_cpus

use_all_cpus()  # before TVM's thread pool starts: TVM's own default halves the CPU count on x86

__all__ = ["Runner", "Timings", "load_runner"]


def load_runner(folder: str | Path, meta: dict, *, rpc: str | None = None) -> Runner:
    """A runner for the artifact folder whose effc.json is `meta`: ONNX Runtime for ORT artifacts; for TVM ones the
    board at `rpc` (HOST:PORT), else this process when the target's architecture is this machine's, else the
    target's emulator (qemu-system-arm for microcontrollers). EffcError when none of them can run it here."""
    from effc.targets import Target, host_machine

    folder = Path(folder)
    if meta["backend"] == "ort":
        if rpc:
            raise EffcError("--rpc runs TVM artifacts; an ORT artifact runs wherever ONNX Runtime is installed")
        from effc.runners.ort import ORTRunner

        return ORTRunner(folder / meta["library"], [spec["name"] for spec in meta["inputs"]])
    target = Target.from_json(meta["target"])
    if target.lowering == "mcu":
        if rpc:
            raise EffcError("--rpc runs TVM VM artifacts; a microcontroller artifact runs under qemu-system-arm")
        from effc.runners.qemu_system_arm import QemuSystemArmRunner

        return QemuSystemArmRunner(folder, meta)
    if rpc:
        from effc.runners.rpc import RPCRunner

        return RPCRunner(folder, meta, rpc)
    if target.arch != host_machine() and target.emulator == "qemu-aarch64":
        from effc.runners.qemu_aarch64 import QemuRunner

        return QemuRunner(folder, meta)
    from effc.runners.native import NativeRunner, check_runs_here

    check_runs_here(target)
    return NativeRunner(folder, meta)
