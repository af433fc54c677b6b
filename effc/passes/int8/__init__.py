"""int8 quantization (`int8`): calibrated QDQ that ONNX Runtime fuses into integer kernels."""

from effc.passes.int8.int8 import Int8

__all__ = ["Int8"]
