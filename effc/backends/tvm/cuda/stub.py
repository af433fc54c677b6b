"""A stand-in for the NVIDIA driver on a machine without one, so TVM's CUDA runtime loads at build time.

TVM embeds compiled kernels (a fatbin) only when its CUDA runtime library loads, and that links `libcuda.so.1`, the
driver. libcuda_stub.c defines the driver entry points that library imports, each failing with
CUDA_ERROR_NO_DEVICE: enough to build and serialize a module, never to run one. It is compiled once with the host's
C compiler into the cache.
"""

from __future__ import annotations

import ctypes.util
import os
import shutil
import subprocess
from pathlib import Path

from effc.errors import EffcError

SOURCE = Path(__file__).resolve().parent / "libcuda_stub.c"


def has_driver() -> bool:
    """Whether this machine has the real NVIDIA driver library."""
    return ctypes.util.find_library("cuda") is not None or any(
        Path(folder, "libcuda.so.1").exists() for folder in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"))


def stub_dir() -> Path:
    """A folder holding the stub `libcuda.so.1`, compiled on first use."""
    folder = Path(os.environ.get("EFFC_CACHE", Path.home() / ".cache" / "effc")) / "cuda-driver-stub"
    library = folder / "libcuda.so.1"
    if library.exists() and library.stat().st_mtime >= SOURCE.stat().st_mtime:
        return folder
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise EffcError("compiling for --target cuda without an NVIDIA driver needs a C compiler (gcc) for its stub")
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".libcuda.so.1.{os.getpid()}"
    done = subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-Wl,-soname,libcuda.so.1", "-o", str(partial), str(SOURCE)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise EffcError(f"could not build the CUDA driver stub: {done.stderr.strip().splitlines()[-1:]}")
    partial.replace(library)
    return folder
