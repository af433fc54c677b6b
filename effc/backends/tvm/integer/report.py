"""Which kernels of a lowered module compute integer and which float: for `effc profile`."""

from __future__ import annotations

PRODUCT_BLOCKS = ("conv", "matmul", "dense", "effc_conv", "effc_dense")


def kernel_arithmetic(mod) -> dict[str, str]:
    """{PrimFunc name: "integer" | "float"} for every PrimFunc with a convolution or matmul reduction block, by the
    dtype that block accumulates in."""
    import tvm
    from tvm import s_tir

    kinds: dict[str, str] = {}
    for gvar, func in mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        sch = s_tir.Schedule(func)
        for block in sch.get_child_blocks(sch.get_sblock("root")):
            stmt = sch.get(block)
            if not any(int(v.iter_type) == 2 for v in stmt.iter_vars) or not stmt.name_hint.startswith(PRODUCT_BLOCKS):
                continue  # IterVar.CommReduce; pooling and other reductions are neither
            dtype = str(stmt.writes[0].source.dtype)
            kind = "integer" if dtype.startswith(("int", "uint")) else "float"
            kinds[gvar.name_hint] = "float" if kinds.get(gvar.name_hint) == "float" else kind
    return kinds
