"""Artifacts: self-describing folders holding a compiled model, and the callable that runs one.

Layout: the backend's library (model.so, or model.onnx for ORT), its parameters (params.npz) and effc.json:
format and version, backend, target, input/output names/shapes/dtypes, the passes applied and their ledger, the
calibration data's path (what `effc profile` feeds by default), versions, the source model's hash, and the sha256
of every file (checked on load).
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from effc.errors import EffcError
from effc.fileio import atomic_path
from effc.ir import Model

FORMAT, FORMAT_VERSION, META = "effc-artifact", 1, "effc.json"


def default_output(model_path: str | Path, target_name: str) -> Path:
    """MODEL_STEM.TARGET.effc beside the current directory."""
    return Path(f"{Path(model_path).stem}.{target_name}.effc")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def compile_artifact(model: Model, target, out: str | Path, *, source: str | Path | None = None, pipeline: str | None = None,
                     ledger: dict | None = None, calibration: str | Path | None = None,
                     progress: Callable[[str], None] | None = None, **backend_options) -> dict:
    """Compile `model` (static input shapes) for `target` (effc.targets.Target) into the folder `out`,
    atomically; returns the effc.json document. `calibration`: the file or folder the passes calibrated on, recorded
    as an absolute path. EffcError for dynamic shapes or ops the backend cannot take."""
    from effc.backends import get_backend

    backend = get_backend(target.backend)
    start = time.perf_counter()
    with atomic_path(out, directory=True) as tmp:
        compiled = backend.compile(model, target, tmp, progress=progress, **backend_options)
        files = [compiled.library] + ([compiled.params] if compiled.params else [])
        meta = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "backend": backend.name, "target": target.to_json(),
            "library": compiled.library, "params": compiled.params,
            "inputs": [spec.to_json() for spec in model.input_specs()],
            "outputs": [{**spec.to_json(), "file": _output_file(spec.name)} for spec in model.output_specs()],
            "pipeline": pipeline, "ledger": ledger,
            "calibration": {"path": str(Path(calibration).resolve())} if calibration else None,
            "source": {"path": str(source) if source else model.source,
                       "sha256": sha256_file(source) if source and Path(source).is_file() else None},
            "versions": _versions(), "files": {name: sha256_file(tmp / name) for name in files},
            "compile_seconds_total": round(time.perf_counter() - start, 3), **compiled.extra,
        }
        (tmp / META).write_text(json.dumps(meta, indent=1))
    return meta


def _output_file(name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return f"{safe}.npy"


def _versions() -> dict:
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for package in ("effc", "apache-tvm", "apache-tvm-ffi", "onnxruntime", "onnx", "numpy"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    return versions


def read_meta(folder: str | Path, *, check_files: bool = True) -> dict:
    """effc.json of an artifact folder, validated; EffcError for a missing, foreign or corrupted artifact."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EffcError(f"{folder} is not an effc artifact: not a folder (compile one with `effc compile`)")
    try:
        meta = json.loads((folder / META).read_text())
    except FileNotFoundError:
        raise EffcError(f"{folder} is not an effc artifact: it has no {META}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EffcError(f"{folder}/{META} is corrupted: not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise EffcError(f"{folder} is not an effc artifact: {META} has no format {FORMAT!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise EffcError(f"{folder} has artifact format version {meta.get('format_version')}; this effc reads {FORMAT_VERSION}")
    if check_files:
        for name, digest in (meta.get("files") or {}).items():
            path = folder / name
            if not path.is_file():
                raise EffcError(f"{folder} is corrupted: {name} is missing")
            if sha256_file(path) != digest:
                raise EffcError(f"{folder} is corrupted: {name} does not match its checksum in {META}")
    return meta


class Artifact:
    """A compiled artifact folder: `artifact(input=array)` or `artifact({"input": array})` -> {output name: array}.

    `meta` is its effc.json. The runner (`runner`) is made on first use, so compiling for another machine needs
    nothing that runs there. From `effc.compile`: `passes` (the passes' RunResult: ledger, reports, warnings) and
    `tuning` (the TuneReport of a tune first, else None)."""

    def __init__(self, folder: str | Path, meta: dict, runner=None, *, rpc: str | None = None, passes=None, tuning=None):
        self.folder, self.meta = Path(folder), meta
        self._runner, self._rpc = runner, rpc
        self.passes, self.tuning = passes, tuning
        self.input_names = [spec["name"] for spec in meta["inputs"]]
        self.output_names = [spec["name"] for spec in meta["outputs"]]
        # checked on every call: kept ready, since formatting a numpy dtype costs more than a small model's inference
        self._input_checks = [(spec, np.dtype(spec["dtype"])) for spec in meta["inputs"]]

    @property
    def runner(self):
        if self._runner is None:
            from effc.runners import load_runner

            self._runner = load_runner(self.folder, self.meta, rpc=self._rpc)
        return self._runner

    @property
    def target(self):
        from effc.targets import Target

        return Target.from_json(self.meta["target"])

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.folder.iterdir() if f.is_file())

    def ordered_inputs(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The inputs in effc.json order, checked; EffcError for a missing, unknown, misshapen or mistyped input."""
        if len(feeds) != len(self.input_names) or any(name not in feeds for name in self.input_names):
            unknown = sorted(set(feeds) - set(self.input_names))
            if unknown:
                raise EffcError(f"unknown input {unknown[0]!r}; the artifact takes {', '.join(self.input_names)}")
        ordered = []
        for spec, dtype in self._input_checks:
            if spec["name"] not in feeds:
                raise EffcError(f"missing input {spec['name']!r} (shape {spec['shape']}, {spec['dtype']})")
            value = np.asarray(feeds[spec["name"]])
            expected = spec["shape"]
            if len(value.shape) != len(expected) or any(isinstance(d, int) and d != n for d, n in zip(expected, value.shape)):
                raise EffcError(f"input {spec['name']!r} has shape {list(value.shape)}; the artifact was compiled for {spec['shape']}")
            if value.dtype != dtype:
                raise EffcError(f"input {spec['name']!r} has dtype {value.dtype}; the artifact takes {spec['dtype']}")
            ordered.append(value)
        return ordered

    def __call__(self, feeds: Mapping[str, np.ndarray] | None = None, **named: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.runner(self.ordered_inputs({**(feeds or {}), **named}))
        return dict(zip(self.output_names, outputs))


def load_artifact(path: str | Path, *, rpc: str | None = None) -> Artifact:
    """Load an artifact folder; `rpc` (HOST:PORT) runs it on a TVM RPC server instead of here.
    Refuses (EffcError) foreign or corrupted folders and artifacts this machine cannot run."""
    from effc.runners import load_runner

    meta = read_meta(path)
    return Artifact(path, meta, load_runner(Path(path), meta, rpc=rpc), rpc=rpc)
