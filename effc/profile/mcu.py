"""`effc profile` on a microcontroller artifact: flash and RAM from the ELF, and emulated instruction counts.

The counts come from qemu-system-arm under -icount shift=0 (1 ns of virtual time per instruction) read through the
board clock (effc/backends/tvm/mcu/board.py): they are deterministic instruction counts of the emulated core, not
cycles of a real one (no pipeline, no flash wait states, no caches). Per kernel they come from the profile build
(app_profile.elf), whose kernels read the clock; a tick is 40 instructions (31.25 on mps3-an547), so each kernel's
figure is the mean over the runs of a count quantized to a tick.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from effc.errors import EffcError
from effc.profile.profiler import ProfileInputs

EMULATION_NOTE = ("emulated instruction counts (qemu-system-arm -icount shift=0, one tick of the board clock = "
                  "{per_tick:g} instructions), not cycles of a real core")
MAX_REPEAT = 64  # the harness's limit (board_files/main.c)


def is_mcu(meta: dict) -> bool:
    return (meta.get("target") or {}).get("lowering") == "mcu"


@dataclass
class MCUKernel:
    name: str
    onnx_nodes: list[str]
    macs: int | None
    arithmetic: str | None
    instructions: float
    share: float

    @property
    def instructions_per_mac(self) -> float | None:
        return self.instructions / self.macs if self.macs else None


@dataclass
class MCUProfile:
    """Flash: the ELF's .text, .rodata, .data (its initial values live in flash). RAM: .data, .bss (the arena and
    the harness's buffers), the stack reserved and its high-water mark. instructions: per run, the plain build;
    instructions_profiled: per run, the profile build (its clock reads add a little)."""

    artifact: str
    target: str
    where: str
    note: str
    repeat: int
    inputs: ProfileInputs
    flash: dict[str, int]
    ram: dict[str, int]
    weight_bytes: int | None
    arena: dict[str, int | None]
    instructions: float
    instructions_per_run: list[float]
    deterministic: bool  # two emulator runs gave the same counts
    instructions_profiled: float | None
    total_macs: int | None
    kernels: list[MCUKernel] = field(default_factory=list)
    ort_max_abs_diff: float | None = None

    @property
    def instructions_per_mac(self) -> float | None:
        return self.instructions / self.total_macs if self.total_macs else None

    def to_json(self) -> dict:
        data = asdict(self)
        data["instructions_per_mac"] = self.instructions_per_mac
        for row, kernel in zip(data["kernels"], self.kernels):
            row["instructions_per_mac"] = kernel.instructions_per_mac
        return data


def elf_sections(elf: Path) -> dict[str, int]:
    """Section name -> size in bytes (arm-none-eabi-size -A)."""
    done = subprocess.run(["arm-none-eabi-size", "-A", str(elf)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"arm-none-eabi-size failed on {elf}: {done.stderr.strip()[:200]}")
    sections = {}
    for line in done.stdout.splitlines():
        match = re.fullmatch(r"(\.\S+)\s+(\d+)\s+(\d+)", line.strip())
        if match:
            sections[match.group(1)] = int(match.group(2))
    return sections


def memory_of(sections: dict[str, int], stack_bytes: int) -> tuple[dict[str, int], dict[str, int]]:
    flash = {name: sections.get(f".{name}", 0) for name in ("text", "rodata", "data")}
    flash["other"] = sections.get(".ARM.exidx", 0) + sections.get(".isr_vector", 0)
    flash["total"] = sum(flash.values())
    ram = {"data": sections.get(".data", 0), "bss": sections.get(".bss", 0), "stack_reserved": sections.get(".stack", 0),
           "stack_used": stack_bytes}
    ram["total"] = ram["data"] + ram["bss"] + ram["stack_reserved"]
    return flash, ram


def profile_mcu(path: str | Path, *, repeat: int = 8, inputs: str | Path | None = None, seed: int = 0,
                compare_ort: str | None = None) -> MCUProfile:
    """Profile the microcontroller artifact at `path` on the first sample of `inputs` (see profile_inputs):
    `repeat` runs (at most 64) in one emulator, twice over to check the counts repeat, then the profile build.
    `compare_ort`: an ONNX model whose outputs on the same inputs are compared. EffcError when it cannot run here."""
    import numpy as np

    from effc.artifact import load_artifact
    from effc.profile.profiler import profile_inputs
    from effc.runners.qemu_system_arm import build_elf

    artifact = load_artifact(path)
    meta, runner = artifact.meta, artifact.runner
    if not is_mcu(meta):
        raise EffcError(f"{path} is not a microcontroller artifact (target {meta['target']['name']})")
    repeat = max(1, min(repeat, MAX_REPEAT))
    feeds, fed = profile_inputs(meta, inputs, seed=seed)
    ordered = artifact.ordered_inputs(feeds)
    plain = runner.measure(ordered, repeat=repeat)
    again = runner.measure(ordered, repeat=repeat)
    profiled = runner.measure(ordered, repeat=repeat, profile=True)
    per_tick = plain.instructions_per_tick or float("nan")
    mcu = meta.get("mcu") or {}
    specs = mcu.get("kernels") or []
    rows = []
    if profiled.kernel_ticks is not None:
        if len(specs) != len(profiled.kernel_ticks):
            raise RuntimeError(f"effc.json lists {len(specs)} kernels; model.c instruments {len(profiled.kernel_ticks)}")
        total_kernel = sum(profiled.kernel_ticks) or 1
        for spec, ticks in zip(specs, profiled.kernel_ticks):
            rows.append(MCUKernel(spec["name"], list(spec.get("onnx_nodes") or []), spec.get("macs"), spec.get("arithmetic"),
                                  ticks * per_tick / repeat, ticks / total_kernel))
    macs = [spec.get("macs") for spec in specs]
    flash, ram = memory_of(elf_sections(build_elf(Path(path))), plain.stack_bytes)
    profile = MCUProfile(
        str(path), meta["target"]["name"], runner.where, EMULATION_NOTE.format(per_tick=per_tick), repeat, fed, flash, ram,
        mcu.get("weight_bytes", meta.get("weight_bytes")),
        {"bytes": mcu.get("arena_bytes"), "lower_bound": mcu.get("arena_lower_bound"), "naive_sum": mcu.get("arena_naive_sum")},
        sum(plain.ticks) * per_tick / repeat, plain.instructions(), plain.ticks == again.ticks,
        sum(profiled.ticks) * per_tick / repeat, sum(macs) if macs and all(m is not None for m in macs) else None, rows)
    if compare_ort:
        from effc.onnx_runtime import ort_session, run_session

        reference = run_session(ort_session(str(compare_ort)), feeds)
        diffs = [float(np.max(np.abs(reference[name].astype(np.float64) - out.astype(np.float64))))
                 for name, out in zip(artifact.output_names, plain.outputs) if name in reference and out.size]
        profile.ort_max_abs_diff = max(diffs) if diffs else None
    return profile
