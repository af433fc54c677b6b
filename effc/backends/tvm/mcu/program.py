"""A Relax module as a straight program for a microcontroller: kernel calls over inputs, outputs, weights and
intermediate buffers.

The Relax passes (`relax_passes`) stop at StaticPlanBlockMemory: `main` is then plain calls of kernel PrimFuncs
with destination-passing arguments, `R.memory.alloc_tensor` for every intermediate, `R.reshape` views and one
`R.builtin.alloc_tensor` per output. `walk_main` reads that into a `Program`; the offsets inside one arena are
effc's (arena.py), since TVM places every storage at offset 0. A returned buffer is the caller's output buffer
(the kernel writes it directly); only an output that is an input, a weight or another output's buffer is copied.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from effc.errors import EffcError

ALLOC_OPS = ("relax.memory.alloc_tensor", "relax.builtin.alloc_tensor")
VIEW_OPS = ("relax.reshape",)


class UnloweredOperation(EffcError):
    """A Relax operation in main that is no kernel call, allocation or view: the C path cannot run it."""

    def __init__(self, op: str):
        super().__init__(f"the microcontroller C path cannot lower the Relax operation {op}")
        self.op = op


@dataclass(frozen=True)
class Ref:
    """Where a kernel argument lives: kind "input" | "output" | "buffer" | "weight", and its index or name."""

    kind: str
    key: int | str


@dataclass
class Call:
    kernel: str
    args: list[Ref]
    writes: list[Ref]


@dataclass
class Program:
    inputs: list[tuple[str, tuple[int, ...], str]]  # (name, shape, dtype)
    outputs: list[tuple[tuple[int, ...], str]]
    calls: list[Call] = field(default_factory=list)
    buffers: dict[str, int] = field(default_factory=dict)  # intermediate name -> bytes
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    copies: list[tuple[int, Ref]] = field(default_factory=list)  # (output index, where it is copied from)

    def lifetimes(self) -> dict[str, tuple[int, int]]:
        """Each intermediate buffer's (first call writing it, last call touching it)."""
        spans: dict[str, list[int]] = {}
        for i, call in enumerate(self.calls):
            for ref in call.args:
                if ref.kind == "buffer":
                    spans.setdefault(ref.key, []).append(i)
        last_copy = len(self.calls)
        for _, ref in self.copies:
            if ref.kind == "buffer":
                spans.setdefault(ref.key, []).append(last_copy)
        return {name: (min(steps), max(steps)) for name, steps in spans.items()}


def relax_passes() -> list:
    from tvm import relax

    t = relax.transform
    return [t.DecomposeOpsForInference(), t.CanonicalizeBindings(), t.LegalizeOps(), t.AnnotateTIROpPattern(),
            t.FoldConstant(), t.FuseOps(), t.FuseTIR(), t.DeadCodeElimination(), t.RewriteDataflowReshape(),
            t.ToNonDataflow(), t.RemovePurityChecking(), t.CallTIRRewrite(), t.StaticPlanBlockMemory()]


def _shape(ty) -> tuple[int, ...]:
    dims = []
    for dim in ty.shape.values:
        if not hasattr(dim, "value"):
            raise EffcError(f"the microcontroller C path needs static shapes, got a dimension {dim}")
        dims.append(int(dim.value))
    return tuple(dims)


def _nbytes(ty) -> int:
    return int(np.prod(_shape(ty), dtype=np.int64)) * np.dtype(str(ty.dtype)).itemsize


def _op_name(call) -> str:
    op = call.op
    return getattr(op, "name", None) or getattr(op, "name_hint", None) or str(op)


def walk_main(mod) -> Program:
    """The Program of `mod["main"]` after relax_passes(); EffcError naming any operation it cannot run."""
    import tvm
    from tvm import relax

    main = mod["main"]
    count = int(main.attrs["num_input"]) if main.attrs and "num_input" in main.attrs else len(main.params)
    if count != len(main.params):
        raise EffcError("the microcontroller C path needs the weights bound as constants")
    program = Program([(p.name, _shape(p.ty), str(p.ty.dtype)) for p in main.params], [])
    where: dict = {p: Ref("input", i) for i, p in enumerate(main.params)}
    weights: list[tuple[object, str]] = []
    written: set[str] = set()
    tuples: dict = {}  # var -> the fields of the tuple bound to it (multi-output models)

    def ref_of(expr) -> Ref:
        if isinstance(expr, tvm.ir.GenericConst):
            for const, name in weights:
                if const.same_as(expr):
                    return Ref("weight", name)
            name = f"w{len(weights)}"
            weights.append((expr, name))
            program.weights[name] = expr.value.numpy()
            return Ref("weight", name)
        if expr in where:
            return where[expr]
        raise EffcError(f"the microcontroller C path cannot place {type(expr).__name__} {expr}")

    for block in main.body.blocks:
        for binding in block.bindings:
            var, value = binding.var, binding.value
            if isinstance(value, relax.Var):
                if value in tuples:
                    tuples[var] = tuples[value]
                else:
                    where[var] = ref_of(value)
                continue
            if isinstance(value, relax.Tuple):
                tuples[var] = list(value.fields)
                continue
            if isinstance(value, relax.TupleGetItem) and value.tuple_value in tuples:
                where[var] = ref_of(tuples[value.tuple_value][int(value.index)])
                continue
            if not isinstance(value, relax.Call):
                raise EffcError(f"the microcontroller C path cannot lower a {type(value).__name__} in main")
            if isinstance(value.op, relax.GlobalVar):
                args = [ref_of(a) for a in value.args]
                writes = [r for r in args if r.kind == "buffer" and r.key not in written]
                written.update(r.key for r in writes)
                program.calls.append(Call(value.op.name_hint, args, writes))
                continue
            name = _op_name(value)
            if name == "relax.memory.alloc_storage":
                continue
            if name in ALLOC_OPS:
                key = f"t{len(program.buffers)}"
                program.buffers[key] = _nbytes(var.ty)
                where[var] = Ref("buffer", key)
            elif name in VIEW_OPS:
                where[var] = ref_of(value.args[0])
            else:
                raise UnloweredOperation(_lowered_name(value))
    result = main.body.body
    returned = list(result.fields) if isinstance(result, relax.Tuple) else tuples.get(result, [result])
    _bind_outputs(program, returned, [ref_of(r) for r in returned])
    return program


def _lowered_name(call) -> str:
    """What a Relax call that is no kernel does, for the error message (an extern's symbol where it has one)."""
    name = _op_name(call)
    if name in ("relax.call_dps_packed", "relax.call_packed") and call.args:
        return f"{name}({getattr(call.args[0], 'global_symbol', call.args[0])})"
    return name


def _bind_outputs(program: Program, returned: list, refs: list[Ref]) -> None:
    """Make each returned buffer the caller's output buffer; copy the outputs that cannot be written in place."""
    taken: set[str] = set()
    rename: dict[str, Ref] = {}
    for j, (expr, ref) in enumerate(zip(returned, refs)):
        program.outputs.append((_shape(expr.ty), str(expr.ty.dtype)))
        if ref.kind == "buffer" and ref.key not in taken:
            taken.add(ref.key)
            rename[ref.key] = Ref("output", j)
        else:
            program.copies.append((j, ref))
    for call in program.calls:
        call.args = [rename.get(r.key, r) if r.kind == "buffer" else r for r in call.args]
        call.writes = [rename.get(r.key, r) if r.kind == "buffer" else r for r in call.writes]
    program.copies = [(j, rename.get(r.key, r) if r.kind == "buffer" else r) for j, r in program.copies]
    for key in rename:
        del program.buffers[key]
