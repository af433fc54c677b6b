"""Run a compiled effc artifact on the TVM runtime alone: needs numpy and tvm (TVM_USE_RUNTIME_LIB=1 is enough).

This file does not import effc, so it also runs under qemu-aarch64 with an aarch64 Python and on a board.
As a script: `python vm_runner.py ARTIFACT_DIR REQUEST.json` where the request is
  {"inputs": {name: "in.npy"}, "output_dir": "...", "repeat": 0, "warmup": 0, "kernels": false, "marks": false}
(repeat > 0 also profiles: see VMRunner.profile)
It writes one .npy per output into output_dir and prints a JSON result (timings) on its last stdout line.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np


def use_all_cpus() -> None:
    """Run kernels on every CPU this process may use, as ONNX Runtime does: TVM's own default halves the CPU count
    on x86 (it assumes hyper-threads). Must run before TVM's thread pool starts; TVM_NUM_THREADS still wins."""
    if "TVM_NUM_THREADS" not in os.environ:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        os.environ["TVM_NUM_THREADS"] = str(cpus)


use_all_cpus()

COUNT_MARK = 0x6566_6663  # "effc": see effc/runners/qemu_icount.py


def mark_instruction_count() -> None:
    """Under qemu with effc's counting plugin: note the executed-instruction count here (a failing lseek the plugin
    watches for); elsewhere a harmless failed syscall."""
    try:
        os.lseek(-1, COUNT_MARK, os.SEEK_SET)
    except OSError:
        pass


class VMRunner:
    """The Relax VM of an artifact folder, with its parameters loaded (and pre-packed once if the library asks)."""

    def __init__(self, folder: str, library: str = "model.so", params: str = "params.npz", device=None, remote_lib=None):
        import tvm
        from tvm.runtime.vm import VirtualMachine

        self.tvm = tvm
        self.device = device if device is not None else tvm.cpu()
        lib = remote_lib if remote_lib is not None else tvm.runtime.load_module(os.path.join(folder, library))
        self.vm = VirtualMachine(lib, self.device)
        with np.load(os.path.join(folder, params)) as stored:
            values = [stored[f"p{i:05d}"] for i in range(len(stored.files))]
        self.params = [tvm.runtime.tensor(v, self.device) for v in values]
        self._staging: dict[int, np.ndarray] = {}
        if self._has("main_transform_params"):
            # Weights pre-packed by the schedules: transform once here, not on every call.
            self.params = list(self.vm["main_transform_params"](self.params))

    def _has(self, name: str) -> bool:
        try:
            self.vm.module[name]
            return True
        except Exception:  # the runtime raises its own error type for a missing function
            return False

    def __call__(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        args = [self.device_tensor(i, x) for i, x in enumerate(inputs)]
        outputs = _flatten(self.vm["main"](*args, *self.params), on_host=self.on_host)
        # an output that is an input (an identity model) must not alias the staging buffer that the next call reuses
        return [out.copy() if any(np.shares_memory(out, s) for s in self._staging.values()) else out
                for out in outputs] if self._staging else outputs

    @property
    def on_host(self) -> bool:
        return self.device.dlpack_device_type() == 1

    def device_tensor(self, index: int, array: np.ndarray):
        """Input `index` as a TVM tensor on the device. On the host it is copied into a staging buffer aligned as the
        kernels assume (64 bytes) and shared with TVM without a further copy: creating a TVM tensor from numpy
        costs more than a small model's whole inference."""
        array = np.require(array, requirements="C")  # np.ascontiguousarray makes a scalar (rank 0) input rank 1
        if not self.on_host:
            return self.tvm.runtime.tensor(array, self.device)
        staging = self._staging.get(index)
        if staging is None or staging.shape != array.shape or staging.dtype != array.dtype:
            raw = np.empty(array.nbytes + 64, dtype=np.uint8)
            start = -raw.ctypes.data % 64
            staging = raw[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
            self._staging[index] = staging
        np.copyto(staging, array)
        return self.tvm.runtime.from_dlpack(staging)

    def profile(self, inputs: list[np.ndarray], repeat: int, warmup: int, kernels: bool, marks: bool = False) -> dict:
        """Timed runs: "latency_s" (seconds per plain call of `main`) and, with `kernels`, "kernels_s" (seconds per
        called function summed per run), "sequence" (call order in one run) and "instrumented_s" (seconds of each of those
        instrumented runs, which the kernel times add up to less the callbacks' cost). All plain runs come first: an
        instrumented run calls back into Python around every kernel, which lets the thread pool fall asleep and
        would bill its wake-up to the plain run after it."""
        args = [self.device_tensor(i, x) for i, x in enumerate(inputs)]
        vm_main = self.vm["main"]
        # a GPU runs kernels asynchronously: every timed call (and every instrumented kernel) waits for it
        sync = (lambda: None) if self.on_host else self.device.sync

        def main(*call_args):
            vm_main(*call_args)
            sync()

        for _ in range(warmup):
            main(*args, *self.params)
        latency = []
        for _ in range(repeat):
            if marks:
                mark_instruction_count()
            start = time.perf_counter()
            main(*args, *self.params)
            latency.append(time.perf_counter() - start)
            if marks:
                mark_instruction_count()
        state = {"start": 0.0, "run": {}, "sequence": []}

        def instrument(func, symbol, before, ret, *rest):
            if before:
                sync()
                state["sequence"].append(symbol)
                state["start"] = time.perf_counter()
            else:
                sync()
                run = state["run"]
                run[symbol] = run.get(symbol, 0.0) + time.perf_counter() - state["start"]
            return 0

        runs, instrumented = [], []
        if kernels:
            self.vm.set_instrument(_as_function(instrument))
            try:
                for _ in range(repeat):
                    state["run"], state["sequence"] = {}, []
                    start = time.perf_counter()
                    main(*args, *self.params)
                    instrumented.append(time.perf_counter() - start)
                    runs.append(state["run"])
            finally:
                self.vm.set_instrument(_as_function(lambda *args: 0))
        result = {"latency_s": latency}
        if kernels:
            names = sorted({n for run in runs for n in run})
            result["kernels_s"] = {n: [run.get(n, 0.0) for run in runs] for n in names}
            result["sequence"] = state["sequence"]
            result["instrumented_s"] = instrumented
        return result


def _as_function(fn):
    import tvm_ffi

    return tvm_ffi.convert(fn)


def _flatten(value, on_host: bool = False) -> list[np.ndarray]:
    """The VM's (nested) outputs as numpy arrays; host tensors are shared, not copied (each call allocates new ones)."""
    if hasattr(value, "numpy"):
        return [np.from_dlpack(value) if on_host else value.numpy()]
    return [x for item in value for x in _flatten(item, on_host)]


def main(argv: list[str]) -> int:
    folder, request_path = argv[1], argv[2]
    with open(request_path) as f:
        request = json.load(f)
    with open(os.path.join(folder, "effc.json")) as f:
        meta = json.load(f)
    runner = VMRunner(folder, meta["library"], meta["params"])
    inputs = [np.load(request["inputs"][spec["name"]]) for spec in meta["inputs"]]
    outputs = runner(inputs)
    os.makedirs(request["output_dir"], exist_ok=True)
    for spec, value in zip(meta["outputs"], outputs):
        np.save(os.path.join(request["output_dir"], spec["file"]), value)
    result = runner.profile(inputs, request["repeat"], request.get("warmup", 1), request.get("kernels", False),
                            request.get("marks", False)) if request.get("repeat") else {}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
