"""TVM's C codegen for plain C kernels: `void effc_<name>(float* a, ..., float* out)`, no TVM runtime.

`tvm.tirx.build(..., target="c")` lowers every PrimFunc to the packed FFI convention (MakePackedAPI: TVMFFIAny
arguments, argument checks, `tvm/ffi/c_api.h`). The TIR pipeline here is the s_tir one for a CPU without that pass:
`plain_signature` turns each buffer parameter into a typed pointer and marks the function with the default
calling convention, and the host finalization leaves out LowerTVMBuiltin, so small local arrays stay C arrays
(a schedule.py kernel has nothing larger than a few accumulators). The source is then stripped of the TVM
includes and export macros it still writes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PIPELINE_NAME = "effc_mcu"
C_TYPES = {"float32": "float", "int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t", "int32": "int32_t",
           "uint16": "uint16_t", "uint32": "uint32_t", "int64": "int64_t", "bool": "bool"}
PREAMBLE = "#include <math.h>\n#include <stdbool.h>\n#include <stdint.h>\n"
# TIR's round is nearbyintf, a library call in newlib on cores without VRINT (M4, M0+), once per requantized
# output. This is the same rounding (to nearest, ties to even, in the default rounding mode) inline: adding and
# subtracting 2^23 leaves the integer nearest to |x| for |x| < 2^23; larger floats are integers already.
ROUND_SOURCE = """
static inline float effc_nearbyintf(float x) {
  float a = fabsf(x);
  float r = copysignf((a + 8388608.0f) - 8388608.0f, x);
  return a < 8388608.0f ? r : x;
}
"""


@dataclass(frozen=True)
class Kernel:
    """One emitted C function: its symbol and the C type of each pointer parameter, in order."""

    symbol: str
    param_types: tuple[str, ...]

    def prototype(self) -> str:
        return f"void {self.symbol}({', '.join(f'{t}*' for t in self.param_types)});"


def c_type(dtype: str) -> str:
    from effc.errors import EffcError

    if dtype not in C_TYPES:
        raise EffcError(f"the microcontroller C path has no C type for {dtype} tensors")
    return C_TYPES[dtype]


def _plain_signature():
    import tvm
    from tvm.tirx import DeclBuffer, PrimFunc, SeqStmt, Var

    @tvm.tirx.transform.prim_func_pass(opt_level=0, name="effc.PlainSignature")
    def plain_signature(func, mod, ctx):
        params, decls = [], []
        for param in func.params:
            if type(param.ty).__name__ != "BufferType":
                params.append(param)
                continue
            pointer = Var(param.name, tvm.ir.PointerType(tvm.ir.PrimType(param.dtype)))
            params.append(pointer)
            decls.append(DeclBuffer(param, data=pointer))
        return PrimFunc(params, SeqStmt([*decls, func.body]), func.ret_type, func.attrs).with_attr("calling_conv", 0)

    return plain_signature


def _pipeline_factory():
    import tvm
    from tvm import s_tir, tirx

    @tvm.transform.module_pass(opt_level=0, name="effc.MCUTIRPipeline")
    def pipeline(mod, ctx):
        passes = [
            s_tir.transform.CanonicalizeLoop(), s_tir.transform.LowerInitBlock(),
            s_tir.transform.PlanAndUpdateBufferAllocationLocation(), s_tir.transform.ConvertBlocksToOpaque(),
            s_tir.transform.CompactBufferAllocation(), s_tir.transform.LowerMatchBuffer(),
            s_tir.transform.StmtSimplify(), s_tir.transform.LowerOpaqueBlock(), tirx.transform.FlattenBuffer(),
            tirx.transform.NarrowDataType(32), s_tir.transform.LoopPartition(), tirx.transform.VectorizeLoop(False),
            tirx.transform.StorageRewrite(), tirx.transform.UnrollLoop(), tirx.transform.StmtSimplify(),
            tirx.transform.RemoveNoOp(), s_tir.transform.RewriteUnsafeSelect(), tirx.transform.CommonSubexprElim(),
            tirx.transform.VerifyMemory(), tirx.transform.AnnotateEntryFunc(), tirx.transform.SplitHostDevice(),
            _plain_signature(),
        ]
        return tvm.ir.transform.Sequential(passes)(mod)

    def finalize():
        return tvm.ir.transform.Sequential([tirx.transform.LowerIntrin()])

    return pipeline, finalize, finalize


def _register_pipeline() -> None:
    from tvm.tirx import compilation_pipeline

    if PIPELINE_NAME not in compilation_pipeline.PIPELINE_MAP:
        compilation_pipeline.register_tir_pipeline(PIPELINE_NAME, _pipeline_factory)


def _strip_tvm(source: str) -> str:
    """The codegen's C without TVM's headers, export macros and library context."""
    kept = []
    for line in source.splitlines():
        if line.startswith(("#include", "#define TVM_EXPORTS", "// tvm target")) or "__tvm_ffi__library_ctx" in line:
            continue
        kept.append(line)
    body = "\n".join(kept)
    body = re.sub(r'#ifdef __cplusplus\nextern "C"\n#endif\n', "", body)
    return PREAMBLE + body.replace("TVM_DLL ", "") + "\n"


def build_kernels(funcs: dict[str, object]) -> tuple[str, dict[str, Kernel]]:
    """(C source, {name: Kernel}) for `funcs` ({name: scheduled PrimFunc}); each becomes `effc_<name>`."""
    import tvm

    _register_pipeline()
    symbols = {name: f"effc_{name}" for name in funcs}
    module = tvm.IRModule({symbols[name]: func.with_attr("global_symbol", symbols[name])
                           for name, func in funcs.items()})
    with tvm.transform.PassContext(config={"tirx.disable_assert": True}):
        library = tvm.tirx.build(module, target={"kind": "c"}, pipeline=PIPELINE_NAME)
    kernels = {name: Kernel(symbols[name], tuple(c_type(str(p.dtype)) for p in funcs[name].params))
               for name in funcs}
    source = _strip_tvm(library.inspect_source())
    if "nearbyintf(" in source:
        body = re.sub(r"^float nearbyintf\(float\);\n", "", source, flags=re.MULTILINE).replace("nearbyintf(", "effc_nearbyintf(")
        source = body.replace(PREAMBLE, PREAMBLE + ROUND_SOURCE, 1)
    if "effc_dot" in source:
        from effc.backends.tvm.mcu.dsp import DOT_SOURCE

        source = source.replace(PREAMBLE, PREAMBLE + DOT_SOURCE, 1)
    return source, kernels
