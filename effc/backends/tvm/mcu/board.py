"""The board side of a microcontroller artifact: the semihosting harness, startup code, linker script and Makefile
written beside the model's C (model.c/.h, kernels.c, weights.c), so `make` in the artifact folder builds app.elf.

The harness (board_files/main.c) reads input<i>.bin, runs effc_run, writes output<i>.bin and prints one
`EFFC_RESULT` line through semihosting; harness_io.c, generated here from model.h's effc_run prototype, holds the
typed input/output buffers and the call. The clock is the board's CMSDK timer under qemu (a fixed number of
instructions per tick with -icount shift=0), else the DWT cycle counter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from effc.targets import Target

DEFAULT_STACK_BYTES = 16 * 1024
# copied verbatim into the artifact; link.ld and Makefile are filled in from the board, harness_io.c generated
VERBATIM_FILES = ("main.c", "startup.c", "semihost.c", "semihost.h", "harness.h", "clock.h", "profile_hooks.h")
PROJECT_FILES = (*VERBATIM_FILES, "harness_io.c", "link.ld", "Makefile")
MODEL_FILES = ("model.c", "model.h", "kernels.c", "weights.c")
C_TYPES = {"float": "float32", "int8_t": "int8", "uint8_t": "uint8", "int32_t": "int32"}


@dataclass(frozen=True)
class BoardClock:
    """The counter the harness reads on a qemu board (board_files/clock.h): the CMSDK APB timer0 at `timer_base`,
    or the SysTick when None; both count at `hz`. Under -icount shift=0 an instruction is 1 ns, so one tick is
    1e9 / hz instructions."""

    timer_base: int | None
    hz: int

    @property
    def cflags(self) -> str:
        return f"-DEFFC_TIMER_BASE=0x{self.timer_base:08X}u" if self.timer_base is not None else "-DEFFC_SYSTICK"

    @property
    def instructions_per_tick(self) -> float:
        return 1e9 / self.hz


BOARD_CLOCKS = {
    "mps2-an386": BoardClock(0x40000000, 25_000_000),
    "mps2-an500": BoardClock(0x40000000, 25_000_000),
    "mps3-an547": BoardClock(None, 32_000_000),  # its CMSDK timers read as zero from the core as it boots
}


def board_of(target: Target):
    """The MCUBoard record of a Cortex-M target (effc.targets.mcu.MCU_BOARDS)."""
    from effc.targets.mcu import MCU_BOARDS

    board = MCU_BOARDS.get(target.name) or MCU_BOARDS.get(target.cpu or "")
    if board is None:
        raise ValueError(f"target {target.name!r} has no microcontroller board record")
    return board


def write_project(out_dir: Path, target: Target, *, stack_bytes: int = DEFAULT_STACK_BYTES) -> None:
    """Write the harness, startup code, link.ld and Makefile for `target` into `out_dir`, which already holds the
    model's C (model.h is read for effc_run's signature). ValueError when model.h breaks the artifact contract."""
    out_dir = Path(out_dir)
    board = board_of(target)
    files = resources.files("effc.backends.tvm.mcu") / "board_files"
    for name in VERBATIM_FILES:
        (out_dir / name).write_text((files / name).read_text())
    (out_dir / "harness_io.c").write_text(harness_io_source((out_dir / "model.h").read_text()))
    clock = BOARD_CLOCKS.get(board.qemu_machine or "")
    where = f"qemu {board.qemu_machine}" if board.qemu_machine else f"compile-only; memory of {board.real_board}"
    memory = target.memory
    flash = min(board.flash_window, memory.flash_bytes) if memory and memory.flash_bytes else board.flash_window
    ram = min(board.ram_window, memory.ram_bytes) if memory and memory.ram_bytes else board.ram_window
    fields = {"TARGET": target.name, "WHERE": where, "STACK_SIZE": str(stack_bytes),
              "FLASH_ORIGIN": f"0x{board.flash_origin:08X}", "FLASH_LENGTH": str(flash),
              "RAM_ORIGIN": f"0x{board.ram_origin:08X}", "RAM_LENGTH": str(ram),
              "GCC_FLAGS": " ".join(board.gcc_flags),
              "CLOCK_FLAGS": clock.cflags if clock else ""}
    for template, name in (("link.ld.in", "link.ld"), ("Makefile.in", "Makefile")):
        (out_dir / name).write_text(_fill((files / template).read_text(), fields))


def _fill(text: str, fields: dict[str, str]) -> str:
    return re.sub(r"@([A-Z_]+)@", lambda m: fields[m.group(1)], text)


def effc_run_params(model_h: str) -> list[tuple[str, str]]:
    """(C element type, parameter name) of each effc_run parameter, inputs first (const), then outputs."""
    found = re.search(r"\bint\s+effc_run\s*\(([^)]*)\)", model_h)
    if not found:
        raise ValueError("model.h declares no `int effc_run(...)`")
    params = []
    for param in found.group(1).split(","):
        typed = re.fullmatch(r"\s*(const\s+)?(\w+)\s*\*\s*(?:const\s+)?(\w+)\s*", param)
        if not typed or typed.group(2) not in C_TYPES:
            raise ValueError(f"model.h: effc_run parameter {param.strip()!r} is not a pointer to {', '.join(C_TYPES)}")
        params.append((bool(typed.group(1)), typed.group(2), typed.group(3)))
    inputs = [p for p in params if p[0]]
    if params[:len(inputs)] != inputs:
        raise ValueError("model.h: effc_run must take its inputs (const pointers) before its outputs")
    return [(ctype, name) for _, ctype, name in params]


def _define(model_h: str, name: str) -> int:
    found = re.search(rf"#define\s+{name}\s+\(?\s*(\d+)", model_h)
    if not found:
        raise ValueError(f"model.h does not #define {name}")
    return int(found.group(1))


def harness_io_source(model_h: str) -> str:
    """harness_io.c: one aligned static buffer per input and output, the tables main.c walks, and the effc_run call."""
    params = effc_run_params(model_h)
    n_in, n_out = _define(model_h, "EFFC_NUM_INPUTS"), _define(model_h, "EFFC_NUM_OUTPUTS")
    if n_in + n_out != len(params):
        raise ValueError(f"model.h: effc_run takes {len(params)} pointers, not EFFC_NUM_INPUTS + EFFC_NUM_OUTPUTS = {n_in + n_out}")
    lines = ["/* Generated by effc from model.h: the harness's buffers and the effc_run call. */",
             '#include "harness.h"', '#include "model.h"', ""]
    tables = {"inputs": [], "outputs": []}
    for index, (ctype, _) in enumerate(params):
        kind, i = ("input", index) if index < n_in else ("output", index - n_in)
        buffer = f"effc_{kind}{i}"
        lines.append(f"static {ctype} {buffer}[EFFC_{kind.upper()}{i}_ELEMS] __attribute__((aligned(16)));")
        tables[f"{kind}s"].append(f'    {{"{kind}{i}.bin", {buffer}, sizeof {buffer}}},')
    for kind, rows in tables.items():
        lines += ["", f"const struct effc_io effc_harness_{kind}[] = {{", *(rows or ["    {0, 0, 0},"]), "};"]
    lines += ["", f"const int effc_harness_num_inputs = {n_in}, effc_harness_num_outputs = {n_out};", "",
              "int effc_harness_call(void) {",
              "    return effc_run(" + ", ".join(f"effc_{'input' if i < n_in else 'output'}{i if i < n_in else i - n_in}"
                                           for i in range(len(params))) + ");",
              "}", ""]
    return "\n".join(lines)
