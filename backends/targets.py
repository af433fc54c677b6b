"""The target registry: what each `--target` name compiles to, how its library is linked, and how it runs.

A new board is data: register a `Target` with its TVM target dict, its cross compiler and its runner kind.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

from effc.errors import EffcError


@dataclass(frozen=True)
class Target:
    """A compile target.

    name: what `--target` takes. backend: which backend compiles for it ("tvm", "ort").
    tvm: the TVM target as a JSON dict (None for non-TVM backends). arch: the machine the library runs on
    ("x86_64", "aarch64"). cross_compiler: the C++ compiler that links the library (None: the host's).
    runner: how an artifact runs on this machine ("native", "qemu-aarch64"; "rpc" is chosen per run).
    device: the runtime device kind ("cpu"). cpu: the chosen CPU model, features: its ISA features.
    """

    name: str
    backend: str
    arch: str
    runner: str
    tvm: dict | None = None
    cross_compiler: str | None = None
    device: str = "cpu"
    cpu: str | None = None
    features: tuple[str, ...] = ()
    library_format: str = "so"

    def to_json(self) -> dict:
        return {"name": self.name, "backend": self.backend, "arch": self.arch, "runner": self.runner, "tvm": self.tvm,
                "cross_compiler": self.cross_compiler, "device": self.device, "cpu": self.cpu,
                "features": list(self.features), "library_format": self.library_format}

    @classmethod
    def from_json(cls, data: dict) -> "Target":
        return cls(**{**data, "features": tuple(data.get("features") or ())})

    def tvm_target(self):
        import tvm

        return tvm.target.Target(self.tvm)


# 64-bit ARM cores: LLVM cpu name and the features beyond NEON that TVM can use (dot products, int8 matmul).
ARM_CPUS: dict[str, tuple[str, ...]] = {
    "generic": ("+neon",),
    "cortex-a53": ("+neon",),
    "cortex-a55": ("+neon", "+dotprod"),
    "cortex-a72": ("+neon",),
    "cortex-a76": ("+neon", "+dotprod"),
    "neoverse-n1": ("+neon", "+dotprod"),
    "neoverse-n2": ("+neon", "+dotprod", "+i8mm"),
    "neoverse-v1": ("+neon", "+dotprod", "+i8mm"),
    "cortex-a78": ("+neon", "+dotprod"),
    "cortex-x2": ("+neon", "+dotprod", "+i8mm"),
}

# x86 features worth recording: an artifact built with them cannot run on a CPU without them.
X86_FEATURES = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "amx_int8")


def host_x86_features() -> tuple[str, ...]:
    """The ISA features (from /proc/cpuinfo, in X86_FEATURES) of this machine's CPU."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return ()
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return tuple(f for f in X86_FEATURES if f in flags)


def _x86_host(cpu: str | None) -> Target:
    if platform.machine() not in ("x86_64", "AMD64"):
        raise EffcError(f"--target x86 compiles for this machine, but it is {platform.machine()}")
    from tvm.target import codegen

    mcpu = cpu or codegen.llvm_get_system_cpu()
    return Target("x86", "tvm", "x86_64", "native", {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": mcpu},
                  cpu=mcpu, features=host_x86_features() if cpu is None else ())


def _arm(cpu: str | None) -> Target:
    cpu = cpu or "generic"
    if cpu not in ARM_CPUS:
        raise EffcError(f"unknown --cpu {cpu!r} for --target arm; known: {', '.join(ARM_CPUS)}")
    features = ARM_CPUS[cpu]
    tvm_target = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": list(features)}
    if cpu != "generic":
        tvm_target["mcpu"] = cpu
    host_arm = platform.machine() in ("aarch64", "arm64")
    return Target("arm", "tvm", "aarch64", "native" if host_arm else "qemu-aarch64", tvm_target,
                  cross_compiler=None if host_arm else "aarch64-linux-gnu-g++", cpu=cpu, features=features)


def _ort(cpu: str | None) -> Target:
    if cpu:
        raise EffcError("--cpu does not apply to --target ort")
    return Target("ort", "ort", platform.machine(), "ort", library_format="onnx")


TARGETS = {"x86": _x86_host, "arm": _arm, "ort": _ort}


def register_target(name: str, make) -> None:
    """Add a target: `make(cpu: str | None) -> Target`. Raises on a duplicate name."""
    if name in TARGETS:
        raise ValueError(f"target {name!r} is already registered")
    TARGETS[name] = make


def get_target(name: str, cpu: str | None = None) -> Target:
    """The target for `--target NAME [--cpu CPU]`; EffcError names the known targets when NAME is unknown."""
    if name not in TARGETS:
        raise EffcError(f"unknown target {name!r}; known: {', '.join(TARGETS)}")
    return TARGETS[name](cpu)
