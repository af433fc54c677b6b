"""The microcontroller lowering (target.lowering == "mcu"): an ONNX model -> a C project over one static arena.

Import to Relax with the weights bound as constants (an int8 model's QDQ islands first become integer Relax,
effc.backends.tvm.integer), the Relax passes up to StaticPlanBlockMemory (program.py), effc's arena plan
(arena.py), each kernel scheduled so it needs no intermediate buffer (schedule.py) and emitted by TVM's C codegen
with plain signatures (c_kernels.py), then model.h/model.c/weights.c/kernels.c (emit.py) and effc.json's "mcu"
record. A model whose arena exceeds the board's RAM or whose weights exceed its flash is refused with the numbers.
No TVM runtime and no heap on the device.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from effc.backends.base import Compiled
from effc.backends.tvm.mcu.arena import ArenaPlan, Buffer, plan_arena
from effc.backends.tvm.mcu.program import Program
from effc.errors import EffcError
from effc.ir import Model
from effc.targets import Target

SOURCES = ["model.c", "kernels.c", "weights.c"]
LIBRARY = "model.c"
# Relax op in a kernel's name -> the ONNX ops it computes (the kernel's anchor, for MACs and the node list)
ANCHORS = {"conv2d": ("Conv",), "matmul": ("Gemm", "MatMul"), "dense": ("Gemm", "MatMul"), "max_pool2d": ("MaxPool",),
           "avg_pool2d": ("AveragePool",), "adaptive_avg_pool2d": ("GlobalAveragePool",), "mean": ("GlobalAveragePool", "ReduceMean")}
BOOKKEEPING_OPS = ("QuantizeLinear", "DequantizeLinear", "Flatten", "Reshape")


def build(model: Model, target: Target, out_dir: Path, *, progress: Callable[[str], None] | None = None,
          tuning_db: str | None = None) -> Compiled:
    from effc.backends.tvm.backend import is_quantized, profile_extras
    from effc.backends.tvm.frontend import fold_constants

    say = progress or (lambda text: None)
    if tuning_db is not None:
        raise EffcError(f"--target {target.name}: tuning databases do not apply to microcontroller targets")
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    say("folding constants")
    integer = is_quantized(model)
    if not integer and target.isa is not None and target.isa.fpu is None:
        raise EffcError(f"--target {target.name} has no FPU: a float model would run in software floating point; "
                        "quantize it first (--passes int8, with calibration data)")
    model = fold_constants(model, dequantize_weights=not integer)
    say("importing into Relax")
    mod, islands = _import(model, integer, target)
    seconds["import"] = time.perf_counter() - start
    start = time.perf_counter()
    say(f"planning the arena for {target.name}")
    mod, program = _plan_program(mod, model)
    plan = plan_arena([Buffer(name, program.buffers[name], first, last)
                       for name, (first, last) in program.lifetimes().items()])
    weight_bytes = int(sum(v.nbytes for v in program.weights.values()))
    check_fits(target, plan, weight_bytes)
    say("emitting C kernels")
    kernels, kernel_source, arithmetic = _kernels(mod, program)
    from effc.backends.tvm.mcu.emit import write_sources

    write_sources(out_dir, program, plan, kernels, kernel_source)
    seconds["build"] = time.perf_counter() - start
    _write_board_project(out_dir, target)
    extras = profile_extras(model)
    mcu = {"arena_bytes": plan.arena_bytes, "arena_lower_bound": plan.lower_bound_bytes,
           "arena_naive_sum": plan.naive_bytes, "weight_bytes": weight_bytes,
           "kernels": _kernel_records(program, arithmetic, extras["onnx_nodes"]), "sources": list(SOURCES),
           "headers": ["model.h"], "arena_buffers": _arena_buffers(program, plan)}
    extra = {**extras, "weight_bytes": weight_bytes, "compile_seconds": seconds, "mcu": mcu}
    if islands is not None:
        extra["integer_islands"] = [island.to_json() for island in islands]
    return Compiled(LIBRARY, None, extra)


def _arena_buffers(program: Program, plan: ArenaPlan) -> list[dict]:
    """Each intermediate: bytes, the calls it lives over (first writer, last reader) and its offset in the arena."""
    return [{"name": name, "bytes": program.buffers[name], "first": first, "last": last, "offset": plan.offsets[name]}
            for name, (first, last) in program.lifetimes().items()]


def check_fits(target: Target, plan: ArenaPlan, weight_bytes: int) -> None:
    """EffcError when the arena exceeds the target's RAM or the weights its flash, with the numbers."""
    memory = target.memory
    if memory is None:
        return
    problems = []
    if memory.ram_bytes and plan.arena_bytes > memory.ram_bytes:
        problems.append(f"its arena needs {plan.arena_bytes:,} B of RAM (lower bound {plan.lower_bound_bytes:,} B) "
                        f"and the board has {memory.ram_bytes:,} B")
    if memory.flash_bytes and weight_bytes > memory.flash_bytes:
        problems.append(f"its weights need {weight_bytes:,} B of flash and the board has {memory.flash_bytes:,} B")
    if problems:
        raise EffcError(f"the model does not fit --target {target.name}: " + "; ".join(problems)
                        + " (prune, cluster or quantize it: --passes 'prune(ratio=0.5),int8')")


def _import(model: Model, integer: bool, target: Target):
    """(Relax module with the weights as constants, the integer islands or None). Convolutions of int8 models
    take the SMLAD kernel (dsp.py) where the core has the DSP extension, else integer_conv.py's."""
    from effc.backends.tvm.frontend import import_relax
    from effc.backends.tvm.integer import bind_params, lower_qdq
    from effc.backends.tvm.integer.depthwise import first_of
    from effc.backends.tvm.mcu import dsp, integer_conv

    mod, params = import_relax(model)
    from effc.backends.tvm.mcu import float_conv

    mod = bind_params(mod, params.get("main", []))
    if not integer:
        return float_conv.rewrite_convs(mod), None
    has_dsp = target.isa is not None and "dsp" in target.isa.features
    kernel = first_of(dsp.conv_kernel if has_dsp else None, integer_conv.conv_kernel)
    mod, islands = lower_qdq(mod, conv_kernel=kernel)
    if has_dsp:
        mod = dsp.rewrite_matmuls(mod)
    return mod, islands


def _plan_program(mod, model: Model) -> tuple[object, Program]:
    """(module after the Relax passes, its Program); EffcError naming the ONNX nodes of an operation the C path
    cannot run."""
    import tvm

    from effc.backends.tvm.mcu.program import UnloweredOperation, relax_passes, walk_main

    try:
        mod = tvm.transform.Sequential(relax_passes())(mod)
    except tvm.error.TVMError as exc:
        raise EffcError(f"Relax could not lower the model for a microcontroller: {str(exc).splitlines()[0][:200]}") from None
    try:
        return mod, walk_main(mod)
    except UnloweredOperation as exc:
        op = exc.op.split("(")[0].removeprefix("relax.").split(".")[-1]
        nodes = [f"{n.name} ({n.op})" for n in model.graph.nodes if n.op.lower() == op.replace("_", "")]
        where = f": ONNX node(s) {', '.join(nodes[:4])}" if nodes else ""
        raise EffcError(f"{exc}{where}; the microcontroller targets have no kernel for it (try --target x86 or arm)") from None


def _kernels(mod, program: Program):
    """({name: Kernel}, kernels.c source, {name: "integer" | "float"})."""
    from effc.backends.tvm.mcu.c_kernels import build_kernels
    from effc.backends.tvm.mcu.schedule import accumulates_integers, schedule_kernel

    used = list(dict.fromkeys(call.kernel for call in program.calls))
    funcs = {name: mod[name] for name in used}
    arithmetic = {name: "integer" if accumulates_integers(func) else "float" for name, func in funcs.items()}
    source, kernels = build_kernels({name: schedule_kernel(func) for name, func in funcs.items()})
    for symbol, body in _definitions(source, kernels):
        for banned in ("TVMBackend", "TVMFFI", "malloc", "free("):
            if banned in body:
                raise EffcError(f"kernel {symbol} needs the TVM runtime or a heap ({banned}): the microcontroller C "
                                "path cannot run it")
    return kernels, source, arithmetic


def _definitions(source: str, kernels: dict) -> list[tuple[str, str]]:
    """(symbol, its C text) of each kernel defined in `source`."""
    starts = sorted((source.rfind(f"void {k.symbol}("), k.symbol)
                    for k in kernels.values())
    bounds = [start for start, _ in starts] + [len(source)]
    return [(symbol, source[start:bounds[i + 1]]) for i, (start, symbol) in enumerate(starts) if start >= 0]


def _kernel_records(program: Program, arithmetic: dict[str, str], onnx_nodes: list[list]) -> list[dict]:
    """One record per kernel call: its name, the ONNX nodes it computes (its anchor conv/matmul/pool, in graph
    order, then the elementwise nodes up to the next anchor), MACs and arithmetic."""
    from effc.backends.tvm.mcu.schedule import kernel_anchor

    anchors = [i for i, node in enumerate(onnx_nodes) if any(node[1] in ops for ops in ANCHORS.values())]
    claimed: set[int] = set()
    records = []
    for call in program.calls:
        anchor_op = kernel_anchor(call.kernel, ANCHORS)
        index = next((i for i in anchors if i not in claimed and anchor_op and onnx_nodes[i][1] in ANCHORS[anchor_op]),
                     None)
        nodes, macs = [], 0
        if index is not None:
            claimed.add(index)
            following = [i for i in anchors if i > index]
            stop = following[0] if following else len(onnx_nodes)
            nodes = [onnx_nodes[i][0] for i in range(index, stop)
                     if i == index or onnx_nodes[i][1] not in BOOKKEEPING_OPS]
            macs = int(onnx_nodes[index][2])
        records.append({"name": call.kernel, "onnx_nodes": nodes, "macs": macs, "arithmetic": arithmetic[call.kernel]})
    return records


def _write_board_project(out_dir: Path, target: Target) -> None:
    """The harness, startup code, linker script and Makefile for the target's board (board.py), where present."""
    try:
        from effc.backends.tvm.mcu.board import write_project
    except ImportError:
        return
    write_project(Path(out_dir), target)
