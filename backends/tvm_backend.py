"""The TVM (Relax) backend: effc IR -> ONNX frontend -> Relax pipeline -> shared library + parameters."""

from __future__ import annotations

import importlib.util
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np

from effc.backends.base import Backend, Compiled, Runner, Timings
from effc.backends.targets import Target, host_x86_features
from effc.backends.tvm_support import check_lowerable, elementwise_clip, fold_constants
from effc.errors import EffcError
from effc.ir import Model
from effc.metrics import layer_macs
from effc.profiler import peak_activation_bytes

LIBRARY, PARAMS = "model.so", "params.npz"
RUNNER_SCRIPT = Path(__file__).resolve().parent / "runner" / "vm_runner.py"


def vm_runner_module():
    """backends/runner/vm_runner.py, the effc-free runner that also runs on boards and under qemu."""
    spec = importlib.util.spec_from_file_location("effc_vm_runner", RUNNER_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TVMBackend(Backend):
    name = "tvm"

    def compile(self, model: Model, target: Target, out_dir: Path, *, progress: Callable[[str], None] | None = None,
                tuning_db: str | None = None) -> Compiled:
        """Fold constants, refuse unimportable ops or dynamic dims, import to Relax, build, export library and params."""
        import tvm

        from effc.backends.tvm_schedules import prepack_weights, relax_pipeline

        say = progress or (lambda text: None)
        say("folding constants")
        model = fold_constants(model)
        seconds: dict[str, float] = {}
        start = time.perf_counter()
        say("importing into Relax")
        mod, params = import_relax(model)
        seconds["import"] = time.perf_counter() - start
        say(f"building for {target.name}")
        start = time.perf_counter()
        tvm_target = target.tvm_target()
        mod, values = prepack_weights(mod, params.get("main", []), tvm_target)
        executable = tvm.compile(mod, target=tvm_target, relax_pipeline=relax_pipeline(tvm_target, tuning_db=tuning_db))
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
        macs = layer_macs(model)
        producer = {id(t): i for i, n in enumerate(model.graph.nodes) for t in n.outputs}
        # [name, op, MACs, indices of the nodes producing its inputs]: what the profiler maps kernels onto
        nodes = [[n.name, n.op, macs.get(n.name, 0), sorted({producer[id(t)] for t in n.inputs if id(t) in producer})]
                 for n in model.graph.nodes]
        return Compiled(LIBRARY, PARAMS, {"onnx_nodes": nodes, "weight_bytes": int(sum(v.nbytes for v in values)),
                                          "peak_activation_bytes": peak_activation_bytes(model), "compile_seconds": seconds})

    def load(self, folder: Path, meta: dict, *, rpc: str | None = None) -> Runner:
        target = Target.from_json(meta["target"])
        if rpc:
            from effc.backends.rpc import RPCRunner

            return RPCRunner(folder, meta, rpc)
        if target.arch == "aarch64" and platform.machine() not in ("aarch64", "arm64"):
            from effc.backends.arm_runtime import QemuRunner

            return QemuRunner(folder, meta)
        check_runs_here(target)
        return NativeRunner(folder, meta)


def import_relax(model: Model):
    """(IRModule, params) of `model` (constants already folded): the ONNX frontend with parameters kept as inputs,
    then detached. What compile builds and what `effc tune` extracts its tasks from. EffcError for unimportable ops,
    dynamic dims or a frontend failure."""
    from tvm.relax.frontend import detach_params
    from tvm.relax.frontend.onnx import from_onnx

    check_lowerable(model)
    shapes = {spec.name: list(spec.shape) for spec in model.input_specs()}
    try:
        with elementwise_clip():
            mod = from_onnx(model.to_proto(), shape_dict=shapes, keep_params_in_input=True)
    except Exception as exc:  # the frontend raises bare Python errors for attributes it does not support
        raise EffcError(f"TVM's ONNX frontend failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    return detach_params(mod)


def check_runs_here(target: Target) -> None:
    """EffcError when this machine cannot run a library built for `target` (other architecture, missing ISA features)."""
    machine = platform.machine().replace("AMD64", "x86_64").replace("arm64", "aarch64")
    if target.arch != machine:
        raise EffcError(f"this artifact was compiled for {target.arch} ({target.name}), but this machine is {machine}; "
                        "recompile it here or run it with --rpc on a matching board")
    if target.arch == "x86_64":
        missing = [f for f in target.features if f not in host_x86_features()]
        if missing:
            raise EffcError(f"this artifact was compiled for a {target.cpu} CPU with {', '.join(missing)}, which this "
                            "machine's CPU lacks; recompile it here")


class NativeRunner(Runner):
    """Runs the library in this process, on the target's device of this machine."""

    def __init__(self, folder: Path, meta: dict):
        import tvm

        device = tvm.device(meta["target"].get("device", "cpu"))
        self.vm = vm_runner_module().VMRunner(str(folder), meta["library"], meta["params"], device=device)

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return self.vm(inputs)

    def profile(self, inputs, *, repeat, warmup, kernels) -> Timings:
        outputs = self.vm(inputs)
        result = self.vm.profile(inputs, repeat, warmup, kernels)
        return Timings(outputs, result["latency_s"], result.get("kernels_s"), result.get("sequence", []))
