"""Calibration data: samples keyed by model input name, first axis = samples.

Sources: an `.npz` file, a folder of `.npy` files named after the inputs (memory-mapped, so
a large set streams from disk), or, for a single-input model, a folder of `.npy` files that
each hold some samples (concatenated in file-name order).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np

from effc.errors import EffcError
from effc.ir import TensorSpec

DYNAMIC_BATCH = 16  # samples per run when the model's batch dim is symbolic


class CalibrationData:
    def __init__(self, arrays: Mapping[str, np.ndarray], source: str = "<memory>", *, from_folder: bool = False):
        self._arrays = arrays
        self.source = source
        self.from_folder = from_folder

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CalibrationData":
        path = Path(path)
        if not path.exists():
            raise EffcError(f"{path}: no such calibration file or folder")
        if path.is_dir():
            files = sorted(path.glob("*.npy"))
            if not files:
                raise EffcError(f"{path}: folder holds no .npy files")
            try:
                arrays = {f.stem: np.load(f, mmap_mode="r") for f in files}
            except (ValueError, OSError) as exc:
                raise EffcError(f"{path}: unreadable .npy file ({exc})") from None
            return cls(arrays, str(path), from_folder=True)
        try:
            with np.load(path, allow_pickle=False) as npz:
                if not hasattr(npz, "files"):
                    raise EffcError(f"{path}: expected an .npz archive keyed by input name, or a folder of .npy files")
                arrays = {key: npz[key] for key in npz.files}
        except (ValueError, OSError, EOFError) as exc:
            raise EffcError(f"{path}: not a readable .npz file ({str(exc).splitlines()[0]})") from None
        return cls(arrays, str(path))

    @classmethod
    def random(cls, specs: Sequence[TensorSpec], count: int, *, seed: int = 0) -> "CalibrationData":
        from effc.onnx_runtime import random_inputs

        parts = [random_inputs(specs, seed=seed + i) for i in range(count)]
        return cls({s.name: np.stack([p[s.name] for p in parts]) for s in specs}, f"<random x{count}>")

    def bind(self, specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
        """Arrays keyed by the model's input names, checked against their shapes and dtypes, with at least one sample
        and only finite values; raises EffcError naming the mismatch (a key that matches no input included)."""
        key = tuple((s.name, s.shape, str(s.dtype)) for s in specs)
        if getattr(self, "_bound", (None,))[0] == key:
            return self._bound[1]
        bound = self._bind(specs)
        self._bound = (key, bound)
        return bound

    def _bind(self, specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
        arrays = dict(self._arrays)
        names = {s.name for s in specs}
        unnamed = [k for k in sorted(arrays) if k != "labels"]
        if len(specs) == 1 and specs[0].name not in arrays and unnamed:
            # a single-input model: the file names need not match the input's name (one array, or a folder of parts)
            if not self.from_folder:
                raise EffcError(f"{self.source}: keys {', '.join(unnamed)} match no input; the model's input is {specs[0].name!r}")
            parts = [arrays[k] for k in unnamed]
            arrays = {specs[0].name: parts[0] if len(parts) == 1 else np.concatenate(parts)}
        missing = [s.name for s in specs if s.name not in arrays]
        if missing:
            raise EffcError(f"{self.source}: no calibration data for input {missing[0]!r}; it has {', '.join(sorted(self._arrays)) or 'nothing'}")
        extra = sorted(k for k in arrays if k not in names and k != "labels")
        if extra:
            raise EffcError(f"{self.source}: {', '.join(repr(k) for k in extra)} match no input of the model "
                            f"(inputs: {', '.join(sorted(names))})")
        bound = {}
        for spec in specs:
            data = arrays[spec.name]
            rank = len(spec.shape or ())
            if rank == 0 and data.ndim == 0:  # one sample of a scalar input
                data = data[None]
            if data.ndim not in (rank, rank + 1) or data.ndim == 0:
                raise EffcError(f"{self.source}: input {spec.name!r} expects samples of rank {rank} (shape {list(spec.shape or ())}), got an array of shape {list(data.shape)}")
            sample_shape = data.shape[1:]
            expected = (spec.shape or ()) if data.ndim == rank + 1 else (spec.shape or ())[1:]
            for got, want in zip(sample_shape, expected):
                if isinstance(want, int) and got != want:
                    raise EffcError(f"{self.source}: input {spec.name!r} has shape {list(spec.shape or ())}, calibration samples have shape {list(sample_shape)}")
            if data.dtype != spec.dtype and _kind(data.dtype) != _kind(spec.dtype):
                raise EffcError(f"{self.source}: input {spec.name!r} is {spec.dtype}, the data is {data.dtype}; "
                                f"convert it (e.g. .astype(np.{spec.dtype}) with the model's scaling)")
            if len(data) == 0:
                raise EffcError(f"{self.source}: input {spec.name!r} has zero samples")
            if data.dtype.kind in "fc" and not _all_finite(data):
                raise EffcError(f"{self.source}: input {spec.name!r} holds NaN or Inf values")
            bound[spec.name] = data
        counts = {len(a) for a in bound.values()}
        if len(counts) > 1:
            raise EffcError(f"{self.source}: inputs have different sample counts {sorted(counts)}")
        return bound

    def num_samples(self, specs: Sequence[TensorSpec]) -> int:
        return len(next(iter(self.bind(specs).values())))

    def batches(self, specs: Sequence[TensorSpec], *, limit: int | None = None, batch_size: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Yield feed dicts for ONNX Runtime, streaming; each holds the model's batch of samples."""
        bound = self.bind(specs)
        first = specs[0]
        total = len(bound[first.name])
        if limit is not None:
            total = min(total, limit)
        step = _run_batch(first, bound[first.name], batch_size)
        for start in range(0, total, step):
            stop = min(start + step, total)
            feeds = {}
            for spec in specs:
                data = bound[spec.name]
                rank = len(spec.shape or ())
                part = data[start] if data.ndim == rank + 1 else data[start:stop]
                feeds[spec.name] = np.require(part, dtype=spec.dtype, requirements="C")  # keeps rank 0
            yield feeds

    def take(self, count: int, specs: Sequence[TensorSpec]) -> "CalibrationData":
        bound = self.bind(specs)
        return CalibrationData({k: np.asarray(v[:count]) for k, v in bound.items()}, f"{self.source}[:{count}]")


def _kind(dtype: np.dtype) -> str:
    return {"f": "float", "c": "complex", "i": "integer", "u": "integer", "b": "bool"}.get(np.dtype(dtype).kind, np.dtype(dtype).kind)


def _all_finite(data: np.ndarray, chunk: int = 1 << 22) -> bool:
    flat = data.reshape(-1)  # a view for contiguous (and memory-mapped) arrays: streams in chunks
    return all(np.isfinite(flat[i:i + chunk]).all() for i in range(0, flat.size, chunk))


def _run_batch(spec: TensorSpec, data: np.ndarray, batch_size: int | None) -> int:
    rank = len(spec.shape or ())
    if data.ndim == rank + 1:
        return 1
    dim0 = (spec.shape or (None,))[0]
    if isinstance(dim0, int):
        return dim0
    return batch_size or DYNAMIC_BATCH
