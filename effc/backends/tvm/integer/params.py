"""Moving weights between `main`'s parameters and constants: the rewrite reads weights as constants, the artifact
stores them as parameters (params.npz) in the dtype they have, int8 included."""

from __future__ import annotations

import numpy as np


def bind_params(mod, values: list) -> object:
    """`mod` with `main`'s parameters after its `num_input` inputs bound to `values` (numpy or TVM tensors)."""
    from tvm import relax

    main = mod["main"]
    count = int(main.attrs["num_input"]) if main.attrs and "num_input" in main.attrs else len(main.params) - len(values)
    names = [p.name for p in main.params[count:]]
    arrays = {name: np.asarray(v.numpy() if hasattr(v, "numpy") else v) for name, v in zip(names, values)}
    return relax.transform.BindParams("main", arrays)(mod)


def lift_constants(mod, min_elements: int = 2) -> tuple[object, list[np.ndarray]]:
    """(module, values): every constant of `main` with at least `min_elements` elements becomes a parameter after
    its inputs, in order of use; the values keep their dtypes."""
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    main = mod["main"]
    count = int(main.attrs["num_input"]) if main.attrs and "num_input" in main.attrs else len(main.params)
    lifted: list = []
    values: list[np.ndarray] = []

    @mutator
    class _Lift(PyExprMutator):
        def visit_generic_const_(self, const):
            value = const.value.numpy()
            if value.size < min_elements:
                return const
            var = relax.Var(f"w{len(values):05d}", const.ty)
            lifted.append(var)
            values.append(value)
            return var

    body = _Lift().visit_expr(main.body)
    params = list(main.params[:count]) + lifted
    func = relax.Function(params, body, main.ret_ty, main.is_pure, main.attrs)
    mod = tvm.IRModule({**{gvar: f for gvar, f in mod.functions_items()}, mod.get_global_var("main"): func},
                       attrs=mod.attrs)
    return mod, values
