"""Building a CUDA library in a child process whose TVM can load its CUDA runtime (see lowering.py).

The parent writes the model (constants folded) and a request beside the artifact, starts
`python -m effc.backends.tvm.cuda.build REQUEST.json` with nvcc as TVM's CUDA compiler and, where this machine
has no NVIDIA driver, the driver stub on the library path; the child imports, lowers, compiles and exports, and
prints what it built as JSON on its last stdout line.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from effc.errors import EffcError

FATBIN_MAGIC = bytes.fromhex("50ED55BA")  # 0xBA55ED50, little-endian: the header of a CUDA fat binary


def fatbin_entries(data: bytes) -> list[tuple[str, str]]:
    """(kind, "sm_XY") of every entry of the first CUDA fat binary in `data`: kind "elf" (SASS) or "ptx"."""
    start = data.find(FATBIN_MAGIC)
    if start < 0:
        return []
    _, _, header, size = struct.unpack_from("<IHHQ", data, start)
    entries, offset, end = [], start + header, start + header + size
    while offset + 48 <= end:
        kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, offset)
        sm = struct.unpack_from("<I", data, offset + 28)[0]
        entries.append(({1: "ptx", 2: "elf"}.get(kind, str(kind)), f"sm_{sm}"))
        offset += entry_header + payload
    return entries


def build_in_child(model, target, out_dir: Path, *, library: str, params: str, tuning_db: str | None,
                   progress: Callable[[str], None]) -> dict:
    from effc.backends.tvm.cuda.stub import has_driver, stub_dir

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise EffcError("compiling for --target cuda needs nvcc (CUDA 13) on this machine: it compiles the kernels "
                        "that the artifact embeds")
    request_path, model_path = out_dir / ".cuda_request.json", out_dir / ".model.onnx"
    model.save(model_path)
    request_path.write_text(json.dumps({"model": str(model_path), "target": target.to_json(), "out_dir": str(out_dir),
                                        "library": library, "params": params, "tuning_db": tuning_db}))
    env = {**os.environ, "TVM_CUDA_COMPILE_MODE": "nvcc", "PATH": f"{Path(nvcc).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if not has_driver():
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(stub_dir()), os.environ.get("LD_LIBRARY_PATH")]))
    progress(f"compiling CUDA kernels for {target.cpu} with nvcc")
    try:
        done = subprocess.run([sys.executable, "-m", "effc.backends.tvm.cuda.build", str(request_path)],
                              capture_output=True, text=True, env=env)
    finally:
        request_path.unlink(missing_ok=True)
        model_path.unlink(missing_ok=True)
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
    if result is not None and "error" in result:
        raise EffcError(result["error"])
    if done.returncode != 0 or result is None:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"the CUDA build process failed: {tail[:300]}")
    entries = fatbin_entries((out_dir / library).read_bytes())
    if ("elf", target.cpu) not in entries:
        raise RuntimeError(f"the CUDA library holds no {target.cpu} kernels (fat binary entries: {entries or 'none'})")
    from effc.targets.cuda import CUDA_RUNTIME, MIN_DRIVER

    return {**result, "cuda": {"arch": target.cpu, "fatbin": [f"{kind} {sm}" for kind, sm in entries],
                               "runtime": CUDA_RUNTIME, "min_driver": MIN_DRIVER}}


def _build(request: dict) -> dict:
    import numpy as np
    import tvm

    from effc.backends.tvm import get_lowering
    from effc.backends.tvm.frontend import import_relax
    from effc.ir import load_model
    from effc.targets import Target

    target = Target.from_json(request["target"])
    lowering = get_lowering(target)
    model = load_model(request["model"])
    _identifier_names(model)
    seconds = {}
    start = time.perf_counter()
    mod, params = import_relax(model)
    seconds["import"] = time.perf_counter() - start
    start = time.perf_counter()
    mod, values = lowering.prepare(mod, params.get("main", []), target)
    tvm_target = target.tvm_target()
    with tvm_target:
        executable = tvm.compile(mod, target=tvm_target,
                                 relax_pipeline=lowering.relax_pipeline(target, tuning_db=request["tuning_db"]))
    seconds["build"] = time.perf_counter() - start
    start = time.perf_counter()
    out_dir = Path(request["out_dir"])
    executable.export_library(str(out_dir / request["library"]))
    values = [v.numpy() if hasattr(v, "numpy") else v for v in values]
    np.savez(out_dir / request["params"], **{f"p{i:05d}": v for i, v in enumerate(values)})
    seconds["link"] = time.perf_counter() - start
    return {"weight_bytes": int(sum(v.nbytes for v in values)), "compile_seconds": seconds}


def _identifier_names(model) -> None:
    """Give constants names that are C identifiers: TVM's CUDA codegen names kernel parameters after them and
    writes a weight called `conv1/weight` into the source as it is."""
    import re

    taken = set(model.graph.tensors())
    for tensor in model.constants():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", tensor.name):
            name = re.sub(r"[^A-Za-z0-9_]", "_", tensor.name).lstrip("0123456789") or "w"
            while name in taken:
                name += "_"
            taken.add(name)
            tensor.name = name


def main(argv: list[str]) -> int:
    request = json.loads(Path(argv[1]).read_text())
    try:
        result = _build(request)
    except EffcError as exc:
        result = {"error": str(exc)}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
