"""`--target cuda`: NVIDIA GPUs through TVM's CUDA lowering; `--arch` (or `--cpu`) picks the compute capability.

The artifact embeds kernels compiled for that architecture (a fatbin of sm_XY SASS), so the machine that runs it
needs the NVIDIA driver and a GPU of that architecture family, but no compiler. The TVM wheel links the CUDA 13
runtime, so the driver must support CUDA 13.
"""

from __future__ import annotations

from dataclasses import dataclass

from effc.errors import EffcError
from effc.targets.cpu import host_machine
from effc.targets.record import ISA, Target
from effc.targets.registry import register_target

DEFAULT_ARCH = "sm_90"
CUDA_RUNTIME = "13.0"
MIN_DRIVER = "580.65.06"  # the first Linux driver of CUDA 13.0


@dataclass(frozen=True)
class GPUArch:
    """What a compute capability offers the kernels: tensor-core float types, int8 dot products, shared memory."""

    description: str
    float_types: tuple[str, ...]
    int8_dot: tuple[str, ...]
    max_shared_memory_per_block: int


GPU_ARCHS: dict[str, GPUArch] = {
    "sm_75": GPUArch("Turing (T4)", ("float32", "float16"), ("dp4a", "imma"), 49152),
    "sm_80": GPUArch("Ampere (A100)", ("float32", "float16", "bfloat16"), ("dp4a", "imma"), 49152),
    "sm_86": GPUArch("Ampere (A10, RTX 30)", ("float32", "float16", "bfloat16"), ("dp4a", "imma"), 49152),
    "sm_89": GPUArch("Ada (L4, L40, RTX 40)", ("float32", "float16", "bfloat16"), ("dp4a", "imma"), 49152),
    "sm_90": GPUArch("Hopper (H100, H200)", ("float32", "float16", "bfloat16"), ("dp4a", "imma"), 49152),
}


def compute_capability(arch: str) -> tuple[int, int]:
    """(major, minor) of "sm_XY"."""
    digits = arch.removeprefix("sm_")
    return int(digits[:-1]), int(digits[-1])


def cuda(arch: str | None) -> Target:
    """An NVIDIA GPU of compute capability `arch` (default sm_90), with this machine's CPU as the host."""
    arch = arch or DEFAULT_ARCH
    if arch not in GPU_ARCHS:
        raise EffcError(f"unknown --arch {arch!r} for --target cuda; known: {', '.join(GPU_ARCHS)}")
    info = GPU_ARCHS[arch]
    host = host_machine()
    triple = "x86_64-linux-gnu" if host == "x86_64" else "aarch64-linux-gnu"
    tvm_target = {"kind": "cuda", "arch": arch, "max_shared_memory_per_block": info.max_shared_memory_per_block,
                  "max_threads_per_block": 1024, "thread_warp_size": 32, "host": {"kind": "llvm", "mtriple": triple}}
    isa = ISA(vector_bits=0, vector_registers=0, int8_dot=info.int8_dot, int8_activations="int8", int8_weight_bits=8,
              fpu="ieee", features=(arch,), float_types=info.float_types)
    return Target("cuda", "tvm", host, lowering="cuda", device="cuda", tvm=tvm_target, cpu=arch, isa=isa,
                  description=f"NVIDIA GPU, {arch} {info.description}, through TVM (kernels embedded, CUDA {CUDA_RUNTIME} "
                              f"driver >= {MIN_DRIVER})")


register_target("cuda", cuda, cpus=lambda: list(GPU_ARCHS))
