"""Microcontroller targets (`--target cortex-m4`, `cortex-m7`, `cortex-m55`, `cortex-m0plus`): standalone C with one
static arena, built with arm-none-eabi-gcc, run under qemu-system-arm where qemu has a board for the core.

Each record carries the flash and RAM of a real board with that core, so a model that does not fit is refused with
the numbers; `MCU_BOARDS` adds what the C project and the runner need (gcc flags, the qemu machine or None when the
target is compile-only, the memory map of the emulated board).
"""

from __future__ import annotations

from dataclasses import dataclass

from effc.targets.record import ISA, Memory, Target
from effc.targets.registry import register_target

KIB = 1024


@dataclass(frozen=True)
class MCUBoard:
    """How a Cortex-M artifact is built and where it runs.

    gcc_flags: the arm-none-eabi-gcc core/FPU flags. qemu_machine: the `qemu-system-arm -M` board that emulates
    this core (None: compile-only). flash_origin/ram_origin/ram_window: the emulated board's memory map, used by
    the linker script of the qemu build (a real board's vendor project brings its own). real_board: the board
    whose flash and RAM the target record carries.
    """

    cpu: str
    arch: str
    gcc_flags: tuple[str, ...]
    qemu_machine: str | None
    real_board: str
    flash_origin: int = 0x0
    ram_origin: int = 0x20000000
    flash_window: int = 4 * 1024 * KIB
    ram_window: int = 4 * 1024 * KIB

    def to_json(self) -> dict:
        return {"cpu": self.cpu, "arch": self.arch, "gcc_flags": list(self.gcc_flags), "qemu_machine": self.qemu_machine,
                "real_board": self.real_board, "flash_origin": self.flash_origin, "ram_origin": self.ram_origin,
                "flash_window": self.flash_window, "ram_window": self.ram_window}


MCU_BOARDS: dict[str, MCUBoard] = {
    # mps2-an386: 4 MB SSRAM at 0x0 (the "flash"), 4 MB at 0x20000000.
    "cortex-m4": MCUBoard("cortex-m4", "armv7e-m", ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
                          "mps2-an386", "STM32L4R5 (1 MB flash, 640 KB SRAM of which 320 KB contiguous)"),
    "cortex-m7": MCUBoard("cortex-m7", "armv7e-m", ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16"),
                          "mps2-an500", "STM32H7A3 (2 MB flash, 1.4 MB SRAM of which 1 MB contiguous)"),
    # mps3-an547: ITCM 512 KB at 0x0, DTCM 512 KB at 0x20000000; the M55's MVE (Helium) is not used by the kernels yet.
    "cortex-m55": MCUBoard("cortex-m55", "armv8.1-m.main", ("-mcpu=cortex-m55", "-mthumb", "-mfloat-abi=hard"),
                           "mps3-an547", "Arm Corstone-300 MPS3 AN547 (512 KB ITCM for code, 512 KB DTCM)",
                           flash_window=512 * KIB, ram_window=512 * KIB),
    # No qemu board has a Cortex-M0+; compile-only.
    "cortex-m0plus": MCUBoard("cortex-m0plus", "armv6-m", ("-mcpu=cortex-m0plus", "-mthumb", "-mfloat-abi=soft"),
                              None, "RP2040 (2 MB external flash, 264 KB SRAM)"),
}


def _record(name: str, isa: ISA, memory: Memory, description: str, mattr: tuple[str, ...] = ()) -> Target:
    board = MCU_BOARDS[name]
    tvm_target = {"kind": "c", "mcpu": board.cpu, "keys": ["arm_cpu", "cpu"]}
    if mattr:
        tvm_target["mattr"] = list(mattr)
    return Target(name, "tvm", board.arch, lowering="mcu", device="cpu",
                  emulator="qemu-system-arm" if board.qemu_machine else None, tvm=tvm_target,
                  cross_compiler="arm-none-eabi-gcc", cpu=board.cpu, isa=isa, memory=memory, library_format="elf",
                  description=description)


def _single_precision(fpu: str, dsp: bool = True, mve: bool = False) -> ISA:
    # float16 is storage-only on these cores (no half-precision arithmetic before the M55's MVE-FP), so only float32.
    return ISA(vector_bits=128 if mve else 32, vector_registers=8 if mve else 1, int8_dot=("smlad",) if dsp else (),
               int8_activations="int8", fpu=fpu, features=("dsp",) if dsp else (), float_types=("float32",))


MCU_TARGETS = [
    _record("cortex-m4", _single_precision("fpv4-sp-d16"), Memory(1024 * KIB, 320 * KIB),
            "Cortex-M4F (FPU fpv4-sp-d16, DSP), standalone C, static arena; qemu mps2-an386; STM32L4R5 memory"),
    _record("cortex-m7", _single_precision("fpv5-sp-d16"), Memory(2048 * KIB, 1024 * KIB),
            "Cortex-M7 (FPU fpv5-sp-d16, DSP), standalone C, static arena; qemu mps2-an500; STM32H7A3 memory"),
    _record("cortex-m55", _single_precision("fpv5-d16", mve=True), Memory(512 * KIB, 512 * KIB),
            "Cortex-M55 (FPU, DSP, MVE unused), standalone C, static arena; qemu mps3-an547 (512 KB ITCM/DTCM)"),
    _record("cortex-m0plus", ISA(vector_bits=0, vector_registers=0, int8_dot=(), int8_activations="int8",
                                 fpu=None, features=(), float_types=("float32",)),
            Memory(2048 * KIB, 264 * KIB),
            "Cortex-M0+ (no FPU: int8 models only, float models are refused; requantization uses software float), "
            "standalone C, static arena; compile-only"),
]


def register_mcu_targets() -> None:
    """Make the Cortex-M records selectable by name (done on import; calling it again changes nothing)."""
    from effc.targets.registry import registered_targets

    known = set(registered_targets())
    for target in MCU_TARGETS:
        if target.name not in known:
            register_target(target)


register_mcu_targets()
