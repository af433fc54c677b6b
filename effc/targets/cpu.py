"""CPU targets compiled by TVM: `x86` (this machine, or an LLVM cpu name) and `arm` (64-bit ARM Linux cores)."""

from __future__ import annotations

import platform

from effc.errors import EffcError
from effc.targets.record import ISA, Target
from effc.targets.registry import register_target

# 64-bit ARM cores: the LLVM features beyond NEON that integer kernels can use (dot products, int8 matrix multiply).
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
# LLVM spells some of them differently from /proc/cpuinfo
LLVM_X86_NAMES = {"avx512vnni": "avx512_vnni", "avxvnni": "avx_vnni", "amx-int8": "amx_int8"}
X86_INT8_DOT = ("avx512_vnni", "avx_vnni", "amx_int8")


def host_machine() -> str:
    """This machine's architecture as targets name it: x86_64 or aarch64."""
    return platform.machine().replace("AMD64", "x86_64").replace("arm64", "aarch64")


def host_x86_features() -> tuple[str, ...]:
    """The ISA features (from /proc/cpuinfo, in X86_FEATURES) of this machine's CPU."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return ()
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return tuple(f for f in X86_FEATURES if f in flags)


def x86_isa(features: tuple[str, ...]) -> ISA:
    """What kernels may use on an x86 CPU with `features`: the widest SIMD registers and their count, and how its
    int8 products work (uint8 x int8 through VNNI, else through pmaddubsw, whose 16-bit pair sums saturate unless
    weights keep to 7 bits)."""
    bits = 512 if "avx512f" in features else 256 if "avx2" in features or "avx" in features else 128
    dot = tuple(f for f in X86_INT8_DOT if f in features)
    best = next((f for f in ("avx512f", "avx2", "avx") if f in features), "sse2")
    return ISA(vector_bits=bits, vector_registers=32 if bits == 512 else 16, int8_dot=dot, int8_activations="uint8",
               int8_weight_bits=8 if dot else 7, fpu=best, features=features)


def _llvm_cpu_features(mcpu: str) -> tuple[str, ...]:
    import tvm
    from tvm.target import codegen

    target = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": mcpu})
    names = {LLVM_X86_NAMES.get(str(name), str(name)) for name in codegen.llvm_get_cpu_features(target)}
    return tuple(f for f in X86_FEATURES if f in names)


def known_x86_cpus() -> list[str]:
    import tvm
    from tvm.target import codegen

    target = tvm.target.Target({"kind": "llvm", "mtriple": "x86_64-linux-gnu"})
    return sorted(str(name) for name in codegen.llvm_get_cpu_archlist(target))


def x86(cpu: str | None) -> Target:
    """This machine (its LLVM cpu and /proc/cpuinfo features), or an x86-64 CPU LLVM knows by name."""
    if host_machine() != "x86_64":
        raise EffcError(f"--target x86 compiles for this machine, but it is {platform.machine()}")
    from tvm.target import codegen

    if cpu is None:
        mcpu, features = codegen.llvm_get_system_cpu(), host_x86_features()
    else:
        if cpu not in known_x86_cpus():
            raise EffcError(f"unknown --cpu {cpu!r} for --target x86: not an x86-64 CPU LLVM knows "
                            "(`effc targets` lists them; e.g. skylake-avx512, znver4, haswell)")
        mcpu, features = cpu, _llvm_cpu_features(cpu)
    return Target("x86", "tvm", "x86_64", lowering="cpu", tvm={"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": mcpu},
                  cpu=mcpu, isa=x86_isa(features), description="this machine's x86-64 CPU (or --cpu NAME), through TVM")


def arm(cpu: str | None) -> Target:
    """A 64-bit ARM Linux core (`--cpu`, default a generic NEON core): cross-compiled, run under qemu-aarch64 here."""
    cpu = cpu or "generic"
    if cpu not in ARM_CPUS:
        raise EffcError(f"unknown --cpu {cpu!r} for --target arm; known: {', '.join(ARM_CPUS)}")
    mattr = ARM_CPUS[cpu]
    tvm_target = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": list(mattr)}
    if cpu != "generic":
        tvm_target["mcpu"] = cpu
    on_arm = host_machine() == "aarch64"
    dot = tuple(name for name in ("dotprod", "i8mm") if f"+{name}" in mattr)
    isa = ISA(vector_bits=128, vector_registers=32, int8_dot=dot, int8_activations="int8", int8_weight_bits=8,
              fpu="neon", features=mattr)
    return Target("arm", "tvm", "aarch64", lowering="cpu", emulator=None if on_arm else "qemu-aarch64", tvm=tvm_target,
                  cross_compiler=None if on_arm else "aarch64-linux-gnu-g++", cpu=cpu, isa=isa,
                  description="64-bit ARM Linux (--cpu picks the core), through TVM; runs under qemu-aarch64 here")


register_target("x86", x86, cpus=lambda: ["host", *known_x86_cpus()])
register_target("arm", arm, cpus=lambda: list(ARM_CPUS))
