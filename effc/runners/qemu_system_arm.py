"""Running microcontroller artifacts: build the artifact's C project with arm-none-eabi-gcc (cached by content) and
run it on the board's qemu-system-arm machine, the harness reading inputs and writing outputs through semihosting.

Under `-icount shift=0` every instruction advances virtual time by 1 ns, so the board's timer counts instructions
(board.BoardClock): the counts are deterministic, emulated instruction counts, not the board's cycles.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from effc.backends.tvm.mcu.board import BOARD_CLOCKS, MODEL_FILES, PROJECT_FILES, board_of
from effc.errors import EffcError
from effc.runners.base import Runner, Timings
from effc.targets import Target

DEFAULT_TIMEOUT_S = 300.0
FAULT_EXIT, HARNESS_ERRORS = 20, {10, 11, 12, 13}
APT_HINT = "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"


class MCURunFailed(RuntimeError):
    """The artifact built and started but did not finish: a fault, a timeout, a harness error (exit 3)."""


@dataclass
class MCUMeasurement:
    """One qemu run of the harness. ticks: the board clock around each run; kernel_ticks: per kernel, summed over
    the runs (profile build only); stack_bytes: the stack's high-water mark; instructions_per_tick: see BoardClock."""

    outputs: list[np.ndarray]
    ticks: list[int]
    kernel_ticks: list[int] | None
    stack_bytes: int
    stack_size: int
    instructions_per_tick: float | None

    def instructions(self) -> list[float]:
        return [t * (self.instructions_per_tick or float("nan")) for t in self.ticks]


def cache_root() -> Path:
    return Path(os.environ.get("EFFC_CACHE", Path.home() / ".cache" / "effc")).expanduser() / "mcu"


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise EffcError(f"{name} is not installed; microcontroller artifacts need it: {APT_HINT}")
    return path


def build_elf(folder: Path, *, profile: bool = False) -> Path:
    """The ELF of the artifact's C project (`make`, or `make profile`), built once per content and cached.
    EffcError when the toolchain is missing or the model does not fit the board's memory."""
    require_tool("arm-none-eabi-gcc")
    require_tool("make")
    names = [*MODEL_FILES, *PROJECT_FILES]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise EffcError(f"{folder} is not a microcontroller artifact: {', '.join(missing)} missing (recompile it)")
    digest = hashlib.sha256(b"profile" if profile else b"plain")
    for name in names:
        digest.update(name.encode() + b"\0" + (folder / name).read_bytes() + b"\0")
    elf_name = "app_profile.elf" if profile else "app.elf"
    cached = cache_root() / digest.hexdigest()[:24] / elf_name
    if cached.is_file():
        return cached
    cached.parent.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=cached.parent.parent) as tmp:
        for name in names:
            shutil.copy(folder / name, tmp)
        done = subprocess.run(["make", "-s", "profile" if profile else "all"], check=False, cwd=tmp, capture_output=True, text=True)
        if done.returncode != 0:
            _build_failed(folder, done.stdout + done.stderr)
        cached.parent.mkdir(exist_ok=True)
        os.replace(Path(tmp) / elf_name, cached)
    return cached


def _build_failed(folder: Path, log: str):
    overflow = re.findall(r"region `(\w+)' overflowed by (\d+) bytes", log)
    if overflow:
        region, by = overflow[0]
        raise EffcError(f"{folder}: the model does not fit the board's {region}: over by {int(by):,} bytes "
                        "(linker; flash holds code and weights, RAM the stack, arena and buffers)")
    errors = [line for line in log.splitlines() if "error" in line.lower()] or log.strip().splitlines() or ["no output"]
    raise RuntimeError(f"arm-none-eabi-gcc failed on {folder}: {errors[0][:300]}")


def qemu_command(machine: str, elf: Path) -> list[str]:
    """The qemu-system-arm command line that runs `elf` on `machine` with semihosting and instruction counting."""
    return ["qemu-system-arm", "-M", machine, "-nographic", "-monitor", "none",
            "-semihosting-config", "enable=on,target=native", "-icount", "shift=0", "-kernel", str(elf)]


def run_elf(elf: Path, machine: str, meta: dict, inputs: list[np.ndarray], *, repeat: int = 1,
            timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[list[np.ndarray], dict[str, str]]:
    """Run the harness once under qemu in a scratch folder: the outputs (effc.json order) and the EFFC_RESULT
    fields. MCURunFailed for a fault, a timeout or a harness error."""
    with tempfile.TemporaryDirectory(prefix="effc-mcu-") as tmp:
        for i, (spec, value) in enumerate(zip(meta["inputs"], inputs)):
            np.ascontiguousarray(value, dtype=np.dtype(spec["dtype"]).newbyteorder("<")).tofile(Path(tmp) / f"input{i}.bin")
        np.array([repeat], dtype="<u4").tofile(Path(tmp) / "repeat.bin")
        command = qemu_command(machine, elf)
        try:
            done = subprocess.run(command, check=False, cwd=tmp, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise MCURunFailed(f"the model did not finish within {timeout_s:g} s on qemu {machine} "
                               "(a lockup after a fault, or a loop that never ends)") from None
        log = done.stdout + done.stderr
        fault = re.search(r"EFFC_FAULT (.*)", log)
        if done.returncode == FAULT_EXIT and fault:
            raise MCURunFailed(f"the model faulted on qemu {machine}: {fault.group(1).strip()}")
        error = re.search(r"EFFC_ERROR (.*)", log)
        if done.returncode in HARNESS_ERRORS and error:
            raise MCURunFailed(f"the harness failed on qemu {machine}: {error.group(1).strip()}")
        result = re.search(r"EFFC_RESULT (.*)", log)
        if done.returncode != 0 or not result:
            tail = (log.strip().splitlines() or ["no output"])[-1]
            raise MCURunFailed(f"qemu-system-arm -M {machine} exited with status {done.returncode}: {tail[:300]}")
        outputs = []
        for i, spec in enumerate(meta["outputs"]):
            data = np.fromfile(Path(tmp) / f"output{i}.bin", dtype=np.dtype(spec["dtype"]).newbyteorder("<"))
            if data.size != int(np.prod(spec["shape"], dtype=np.int64)):
                raise MCURunFailed(f"output{i}.bin holds {data.size} values; {spec['name']} has shape {spec['shape']}")
            outputs.append(data.astype(np.dtype(spec["dtype"])).reshape(spec["shape"]))
        return outputs, dict(field.split("=", 1) for field in result.group(1).split())


def _ints(text: str | None) -> list[int] | None:
    return [int(v) for v in text.split(",")] if text else None


class QemuSystemArmRunner(Runner):
    """Runs a microcontroller artifact on its board's qemu-system-arm machine, one emulator process per call."""

    emulated = True

    def __init__(self, folder: Path, meta: dict, *, timeout_s: float | None = None):
        self.folder, self.meta = Path(folder), meta
        target = Target.from_json(meta["target"])
        self.board = board_of(target)
        if self.board.qemu_machine is None:
            raise EffcError(f"{target.name} is compile-only: no qemu board emulates a {self.board.cpu}; flash the C "
                            f"project in {self.folder} onto a board (README: Flashing a real board)")
        require_tool("qemu-system-arm")
        self.machine = self.board.qemu_machine
        self.clock = BOARD_CLOCKS.get(self.machine)
        self.where = f"qemu-system-arm {self.machine} ({self.board.cpu})"
        self.timeout_s = timeout_s or float(os.environ.get("EFFC_QEMU_TIMEOUT", DEFAULT_TIMEOUT_S))

    def measure(self, inputs: list[np.ndarray], *, repeat: int = 1, profile: bool = False) -> MCUMeasurement:
        """Run `repeat` times in one emulator; with `profile`, the build whose kernels read the clock."""
        elf = build_elf(self.folder, profile=profile)
        outputs, fields = run_elf(elf, self.machine, self.meta, inputs, repeat=repeat, timeout_s=self.timeout_s)
        stack, stack_size = int(fields["stack"]), int(fields["stack_size"])
        if stack >= stack_size:  # no painted word left: it ran past the stack (below RAM here: no fault on qemu)
            raise MCURunFailed(f"the model overflowed its {stack_size:,}-byte stack on qemu {self.machine}; "
                               f"rebuild with a larger one (make STACK_SIZE=... in {self.folder})")
        return MCUMeasurement(outputs, _ints(fields["ticks"]), _ints(fields.get("kernel_ticks")), stack, stack_size,
                              self.clock.instructions_per_tick if self.clock else None)

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return self.measure(inputs).outputs

    def profile(self, inputs, *, repeat, warmup, kernels) -> Timings:
        """Virtual time under -icount shift=0 (1 ns per instruction), not the board's time."""
        plain = self.measure(inputs, repeat=repeat)
        timings = Timings(plain.outputs, [i * 1e-9 for i in plain.instructions()])
        if kernels:
            instrumented = self.measure(inputs, repeat=repeat, profile=True)
            names = [k["name"] for k in (self.meta.get("mcu") or {}).get("kernels", [])]
            per_tick = (instrumented.instructions_per_tick or float("nan")) * 1e-9
            if instrumented.kernel_ticks and len(names) == len(instrumented.kernel_ticks):
                timings.kernels_s = {name: [t * per_tick / repeat] for name, t in zip(names, instrumented.kernel_ticks)}
                timings.sequence = names
                timings.instrumented_s = [sum(instrumented.ticks) * per_tick / repeat]
        return timings
