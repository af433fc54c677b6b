"""Running a TVM artifact in this process, on the target's device of this machine."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from effc.errors import EffcError
from effc.runners.base import Runner, Timings
from effc.targets import Target, host_machine, host_x86_features


def check_runs_here(target: Target) -> None:
    """EffcError when this machine cannot run a library built for `target` (other architecture, missing ISA features)."""
    machine = host_machine()
    if target.device == "cuda":
        check_gpu(target)
    if target.arch != machine:
        raise EffcError(f"this artifact was compiled for {target.arch} ({target.name}), but this machine is {machine}; "
                        "recompile it here or run it with --rpc on a matching board")
    if target.arch == "x86_64" and target.device == "cpu":
        missing = [f for f in target.features if f not in host_x86_features()]
        if missing:
            raise EffcError(f"this artifact was compiled for a {target.cpu} CPU with {', '.join(missing)}, which this "
                            "machine's CPU lacks; recompile it here")


def check_gpu(target: Target) -> None:
    """EffcError unless this machine has an NVIDIA GPU that runs kernels compiled for `target.cpu` (SASS of
    compute capability X.Y runs on X.Z for Z >= Y)."""
    import tvm

    from effc.targets.cuda import CUDA_RUNTIME, MIN_DRIVER, compute_capability

    device = tvm.cuda(0)
    if not device.exist:
        raise EffcError(f"this artifact runs on an NVIDIA GPU ({target.cpu}), and this machine has none TVM can use "
                        f"(no GPU, or no NVIDIA driver): run it where there is one, with a CUDA {CUDA_RUNTIME} driver "
                        f"(>= {MIN_DRIVER})")
    have = tuple(int(v) for v in str(device.compute_version).split("."))
    want = compute_capability(target.cpu)
    if have[0] != want[0] or have[1] < want[1]:
        raise EffcError(f"this artifact holds kernels for {target.cpu}; this machine's GPU ({device.device_name}) is "
                        f"sm_{have[0]}{have[1]}: recompile with --target cuda --arch sm_{have[0]}{have[1]}")


class NativeRunner(Runner):
    """The Relax VM of the artifact's library, with its parameters, in this process."""

    def __init__(self, folder: Path, meta: dict):
        import tvm

        from effc.runners.vm_runner import VMRunner

        device = tvm.device(meta["target"].get("device", "cpu"))
        self.vm = VMRunner(str(folder), meta["library"], meta["params"], device=device)

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return self.vm(inputs)

    def profile(self, inputs, *, repeat, warmup, kernels) -> Timings:
        outputs = self.vm(inputs)
        result = self.vm.profile(inputs, repeat, warmup, kernels)
        return Timings(outputs, result["latency_s"], result.get("kernels_s"), result.get("sequence", []),
                       result.get("instrumented_s", []))
