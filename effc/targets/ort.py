"""`--target ort`: ONNX Runtime on the machine that runs the artifact, which holds ONNX."""

from __future__ import annotations

from effc.errors import EffcError
from effc.targets.cpu import host_machine, host_x86_features, x86_isa
from effc.targets.record import ISA, Target
from effc.targets.registry import register_target


def host_isa() -> ISA:
    """What ONNX Runtime's CPU kernels use on this machine (what int8 picks its format by when no target is given)."""
    if host_machine() == "x86_64":
        return x86_isa(host_x86_features())
    # MLAS on ARM runs the uint8 QDQ models the x86 ones are, through its own dot-product kernels
    return ISA(vector_bits=128, vector_registers=32, int8_activations="uint8", fpu="neon")


def ort(cpu: str | None) -> Target:
    """ONNX Runtime (CPU): the artifact holds the model as ORT's portable optimizations leave it."""
    if cpu:
        raise EffcError("--cpu does not apply to --target ort")
    return Target("ort", "ort", host_machine(), isa=host_isa(), library_format="onnx",
                  description="ONNX Runtime on the CPU of the machine that runs it")


register_target("ort", ort)
