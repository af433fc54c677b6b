"""The TVM (Relax) backend: effc IR -> ONNX frontend -> the target's lowering -> shared library + parameters."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from effc.backends.base import Backend, Compiled
from effc.backends.tvm import get_lowering
from effc.backends.tvm.frontend import check_lowerable, fold_constants, import_relax
from effc.ir import Model
from effc.ir.metrics import layer_macs, peak_activation_bytes
from effc.targets import Target

LIBRARY, PARAMS = "model.so", "params.npz"


class TVMBackend(Backend):
    name = "tvm"

    def check(self, model: Model, target: Target) -> None:
        get_lowering(target)
        check_lowerable(fold_constants(model))

    def compile(self, model: Model, target: Target, out_dir: Path, *, progress: Callable[[str], None] | None = None,
                tuning_db: str | None = None) -> Compiled:
        """Fold constants, refuse unimportable ops or dynamic dims, import to Relax, lower for the target, export
        the library and the (prepared) parameters. A lowering module with its own `build(model, target, out_dir, *,
        progress, tuning_db) -> Compiled` builds the artifact's files itself (see effc.backends.tvm); the others
        provide `prepare` and `relax_pipeline`, and the build runs here."""
        lowering = get_lowering(target)
        if hasattr(lowering, "build"):
            return lowering.build(model, target, out_dir, progress=progress, tuning_db=tuning_db)
        say = progress or (lambda text: None)
        say("folding constants")
        integer = hasattr(lowering, "lower_integer") and is_quantized(model)
        model = fold_constants(model, dequantize_weights=not integer)
        extras: dict = {}
        weight_bytes, seconds = self._build(model, target, lowering, out_dir, tuning_db, say, extras if integer else None)
        return Compiled(LIBRARY, PARAMS, {**profile_extras(model), **extras, "weight_bytes": weight_bytes,
                                          "compile_seconds": seconds})

    @staticmethod
    def _build(model: Model, target: Target, lowering, out_dir: Path, tuning_db: str | None, say,
               integer: dict | None = None) -> tuple[int, dict]:
        """Import, lower and export in this process: (weight bytes, seconds per stage). With `integer` (a dict),
        the lowering's integer rewrite runs first and its report lands in that dict."""
        import tvm

        seconds: dict[str, float] = {}
        start = time.perf_counter()
        say("importing into Relax")
        mod, params = import_relax(model)
        seconds["import"] = time.perf_counter() - start
        say(f"building for {target.name}")
        start = time.perf_counter()
        values = params.get("main", [])
        if integer is not None:
            mod, values, report = lowering.lower_integer(mod, values, target)
            integer.update(report)
        mod, values = lowering.prepare(mod, values, target)
        executable = tvm.compile(mod, target=target.tvm_target(),
                                 relax_pipeline=lowering.relax_pipeline(target, tuning_db=tuning_db,
                                                                      **({} if integer is None else {"report": integer})))
        seconds["build"] = time.perf_counter() - start
        start = time.perf_counter()
        say("linking")
        if target.cross_compiler:
            from tvm.support import cc

            executable.export_library(str(out_dir / LIBRARY), fcompile=cc.cross_compiler(target.cross_compiler))
        else:
            executable.export_library(str(out_dir / LIBRARY))
        values = [v.numpy() if hasattr(v, "numpy") else v for v in values]
        np.savez(out_dir / PARAMS, **{f"p{i:05d}": v for i, v in enumerate(values)})
        seconds["link"] = time.perf_counter() - start
        return int(sum(v.nbytes for v in values)), seconds


def is_quantized(model: Model) -> bool:
    """Whether `model` holds QDQ int8 weights (DequantizeLinear of a constant)."""
    import onnx_graphsurgeon as gs

    return any(n.op == "DequantizeLinear" and isinstance(n.inputs[0], gs.Constant) for n in model.graph.nodes)


def profile_extras(model: Model) -> dict:
    """What effc.json records for `effc profile` about a model (constants folded): its ONNX nodes as [name, op,
    MACs, indices of the nodes producing its inputs] in order (what kernels are mapped onto), and its peak
    activation memory."""
    macs = layer_macs(model)
    producer = {id(t): i for i, n in enumerate(model.graph.nodes) for t in n.outputs}
    nodes = [[n.name, n.op, macs.get(n.name, 0), sorted({producer[id(t)] for t in n.inputs if id(t) in producer})]
             for n in model.graph.nodes]
    return {"onnx_nodes": nodes, "peak_activation_bytes": peak_activation_bytes(model)}
