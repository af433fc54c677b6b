"""Replacing calls of one Relax operator in `main` (float_conv.py's convolutions, dsp.py's matmuls)."""

from __future__ import annotations

from collections.abc import Callable


def replace_calls(mod, op_name: str, replace: Callable) -> object:
    """`mod` with each call of `op_name` in `main` (its arguments rewritten first) replaced by
    `replace(builder, call)`, or kept where that returns None."""
    import tvm
    from tvm.relax.expr_functor import PyExprMutator, mutator

    @mutator
    class Replace(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if getattr(call.op, "name", None) != op_name:
                return call
            replaced = replace(self.builder_, call)
            return call if replaced is None else replaced

    rewriter = Replace(mod)
    main = rewriter.visit_expr(mod["main"])
    mod = rewriter.builder_.get()
    return tvm.IRModule({**{gvar: f for gvar, f in mod.functions_items()}, mod.get_global_var("main"): main},
                        attrs=mod.attrs)
