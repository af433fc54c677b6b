"""Running aarch64 artifacts on an x86 host: qemu-aarch64 user-mode emulation of an aarch64 Python with the TVM
runtime, installed once by scripts/setup_arm_runtime.sh (nothing is downloaded here)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from effc.errors import EffcError
from effc.runners import vm_runner
from effc.runners.base import Runner, Timings

SETUP_SCRIPT = "scripts/setup_arm_runtime.sh"
STAMP = ".complete-v2"


def runtime_dir() -> Path:
    return Path(os.environ.get("EFFC_ARM_RUNTIME", Path.home() / ".cache" / "effc" / "arm-runtime")).expanduser()


def qemu_command() -> list[str]:
    """The command prefix that starts the aarch64 Python with the TVM runtime; EffcError says how to install it."""
    root = runtime_dir()
    if not (root / STAMP).exists():
        raise EffcError(f"the aarch64 TVM runtime is not installed in {root}: run `bash {SETUP_SCRIPT}` once")
    qemu = shutil.which("qemu-aarch64")
    if qemu is None:
        raise EffcError(f"qemu-aarch64 is not installed: run `bash {SETUP_SCRIPT}` (it installs qemu-user)")
    return [qemu, "-L", str(root / "root"), "-E", "TVM_USE_RUNTIME_LIB=1", "-E", "PYTHONNOUSERSITE=1",
            "-E", f"PYTHONPATH={root / 'site'}", str(root / "root" / "usr" / "bin" / "python3.11")]


def rpc_server_command(host: str, port: int) -> list[str]:
    """An aarch64 TVM RPC server under qemu, serving one port: a stand-in board for `--rpc` tests.
    (`python -m tvm.exec.rpc_server` re-executes its interpreter, which qemu user mode cannot; this starts the
    server's listening loop in the emulated process itself; sessions fork, which qemu supports.)"""
    script = ("from tvm.rpc.server import PopenRPCServerState as S; "
              f"S({host!r}, {int(port)}, {int(port) + 1}, silent=True).thread.join()")
    return [*qemu_command(), "-c", script]


class QemuRunner(Runner):
    """Runs effc/runners/vm_runner.py under qemu-aarch64, one emulated process per call (about 6 s to start)."""

    emulated = True
    where = "qemu-aarch64"

    def __init__(self, folder: Path, meta: dict):
        self.folder, self.meta = Path(folder), meta
        self.prefix = qemu_command()

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return self._run(inputs, {})[0]

    def profile(self, inputs, *, repeat, warmup, kernels) -> Timings:
        outputs, result = self._run(inputs, {"repeat": repeat, "warmup": warmup, "kernels": kernels})
        return Timings(outputs, result["latency_s"], result.get("kernels_s"), result.get("sequence", []),
                       result.get("instrumented_s", []))

    def instructions_per_run(self, inputs: list[np.ndarray], *, runs: int = 3) -> list[int]:
        """aarch64 instructions each of `runs` calls of the model executed (after one untimed call), on one thread:
        counted by effc's qemu plugin between marks around each call (qemu_icount)."""
        from effc.runners import qemu_icount

        with tempfile.TemporaryDirectory(prefix="effc-icount-") as tmp:
            out_file = Path(tmp) / "marks"
            self._run(inputs, {"repeat": runs, "warmup": 0, "marks": True}, qemu_icount.counting(self.prefix, out_file))
            marks = qemu_icount.read_marks(out_file)
        if len(marks) != 2 * runs:
            raise EffcError(f"qemu-aarch64 noted {len(marks)} instruction-count marks, expected {2 * runs}")
        return [end - start for start, end in zip(marks[::2], marks[1::2])]

    def _run(self, inputs: list[np.ndarray], request: dict, prefix: list[str] | None = None) -> tuple[list[np.ndarray], dict]:
        with tempfile.TemporaryDirectory(prefix="effc-qemu-") as tmp:
            paths = {}
            for spec, value in zip(self.meta["inputs"], inputs):
                paths[spec["name"]] = os.path.join(tmp, f"in{len(paths)}.npy")
                np.save(paths[spec["name"]], value)
            request = {**request, "inputs": paths, "output_dir": os.path.join(tmp, "out")}
            with open(os.path.join(tmp, "request.json"), "w") as f:
                json.dump(request, f)
            done = subprocess.run([*(prefix or self.prefix), vm_runner.__file__, str(self.folder.resolve()), os.path.join(tmp, "request.json")],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise EffcError(f"the aarch64 runner failed under qemu: {tail[:300]}")
            outputs = [np.load(os.path.join(tmp, "out", spec["file"])) for spec in self.meta["outputs"]]
            return outputs, json.loads(done.stdout.strip().splitlines()[-1])
