"""What a compile target is: a record of data, never a name that code branches on.

A `Target` says which backend compiles for it and through which lowering, the device kind its library runs on, how
an artifact runs on a machine of another architecture, the TVM target, and what its kernels may use (`ISA`) and
what memory a board has (`Memory`). Passes and schedule rules read `target.isa`; nothing compares target names.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

Int8Activations = Literal["uint8", "int8"]


@dataclass(frozen=True)
class ISA:
    """What a target's kernels may use.

    vector_bits: the SIMD register width the kernels tile for (0: no SIMD). vector_registers: how many the register
    tiles may fill. int8_dot: the int8 dot-product instructions it has ("avx512_vnni", "avx_vnni", "dotprod",
    "i8mm", "smlad", "dp4a"). int8_activations: the signedness its integer kernels want for activations (x86's
    pmaddubsw and VNNI multiply uint8 by int8; ARM's sdot/smlal and Cortex-M's SMLAD are signed x signed).
    int8_weight_bits: the widest weights its uint8 x int8 products take without saturating: 7 on x86 without VNNI,
    whose pmaddubsw adds pairs of products in 16 bits. fpu: the floating-point unit ("neon", "fpv4-sp-d16"; None: no
    hardware floating point, so float kernels are emulated and int8 is the way to run).
    features: the ISA extensions a library built for it needs where it runs (checked when an artifact loads).
    float_types: the floating-point types its kernels compute in at full speed ("float16", "bfloat16" besides
    "float32"): what the fp16/bf16 passes and `--precision` may ask for.
    """

    vector_bits: int = 128
    vector_registers: int = 16
    int8_dot: tuple[str, ...] = ()
    int8_activations: Int8Activations = "uint8"
    int8_weight_bits: int = 8
    fpu: str | None = "generic"
    features: tuple[str, ...] = ()
    float_types: tuple[str, ...] = ("float32",)

    def lanes(self, dtype_bits: int = 32) -> int:
        """Values of `dtype_bits` in one SIMD register (at least 1)."""
        return max(1, self.vector_bits // dtype_bits)

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "int8_dot": list(self.int8_dot), "features": list(self.features),
                "float_types": list(self.float_types)}

    @classmethod
    def from_json(cls, data: dict) -> "ISA":
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("int8_dot", "features"):
            values[key] = tuple(values.get(key) or ())
        if "float_types" in values:
            values["float_types"] = tuple(values["float_types"])
        return cls(**values)


@dataclass(frozen=True)
class Memory:
    """A board's memory in bytes: what the model's code and constants (flash) and its working memory (RAM) may use."""

    flash_bytes: int | None = None
    ram_bytes: int | None = None

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Target:
    """A compile target.

    name: what `--target` takes. backend: the backend that compiles for it ("tvm", "ort"; see effc.backends).
    lowering: the TVM lowering module that turns imported Relax into its library (effc.backends.tvm.<lowering>;
    None for ORT). device: the TVM device kind the library runs on ("cpu"). arch: the machine it runs on
    ("x86_64", "aarch64"). emulator: how an artifact runs on a machine of another architecture ("qemu-aarch64"), or
    None. tvm: the TVM target as a JSON dict. cross_compiler: the C++ compiler that links the library (None: the
    host's). cpu: the CPU model. isa: what its kernels may use. memory: a board's flash and RAM.
    """

    name: str
    backend: str
    arch: str
    lowering: str | None = None
    device: str = "cpu"
    emulator: str | None = None
    tvm: dict | None = None
    cross_compiler: str | None = None
    cpu: str | None = None
    isa: ISA = field(default_factory=ISA)
    memory: Memory | None = None
    library_format: str = "so"
    description: str = ""

    @property
    def features(self) -> tuple[str, ...]:
        return self.isa.features

    def tvm_target(self):
        import tvm

        return tvm.target.Target(self.tvm)

    def with_name(self, name: str) -> "Target":
        return dataclasses.replace(self, name=name)

    def to_json(self) -> dict:
        return {"name": self.name, "backend": self.backend, "arch": self.arch, "lowering": self.lowering,
                "device": self.device, "emulator": self.emulator, "tvm": self.tvm, "cross_compiler": self.cross_compiler,
                "cpu": self.cpu, "isa": self.isa.to_json(), "memory": self.memory.to_json() if self.memory else None,
                "library_format": self.library_format, "description": self.description}

    @classmethod
    def from_json(cls, data: dict) -> "Target":
        """The record an artifact's effc.json holds (also the flat form of artifacts built before records had an ISA)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        isa = data.get("isa")
        values["isa"] = ISA.from_json(isa) if isinstance(isa, dict) else ISA(features=tuple(data.get("features") or ()))
        memory = data.get("memory")
        values["memory"] = Memory(**memory) if isinstance(memory, dict) else None
        if "lowering" not in data and data.get("backend") == "tvm":
            values["lowering"] = "cpu"
        if "emulator" not in data and data.get("runner", "native") not in ("native", "ort"):
            values["emulator"] = data["runner"]
        return cls(**values)
