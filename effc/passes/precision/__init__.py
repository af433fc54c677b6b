"""Reduced precision (`fp16`): compute in float16 where it is safe, the sensitive ops in float32."""

from effc.passes.precision.fp16 import Float16

__all__ = ["Float16"]
