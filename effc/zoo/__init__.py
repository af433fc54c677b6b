"""The model zoo: where each reference model and its sample data live, building the large ones on demand."""

from __future__ import annotations

import fcntl
import os
import pathlib
from dataclasses import dataclass

ZOO_NAMES = ("digits", "resnet18", "mobilenetv2", "encoder", "ds_cnn")
ZOO_VERSION = "1"  # bump when a builder changes, so stale caches are not reused
SHIPPED_DIR = pathlib.Path(__file__).resolve().parent / "digits"


@dataclass(frozen=True)
class ZooModel:
    name: str
    onnx_path: pathlib.Path
    calib_path: pathlib.Path
    eval_path: pathlib.Path
    has_labels: bool

    def files(self) -> tuple[pathlib.Path, ...]:
        return self.onnx_path, self.calib_path, self.eval_path

    def exists(self) -> bool:
        return all(path.exists() for path in self.files())


def cache_dir() -> pathlib.Path:
    override = os.environ.get("EFFC_ZOO_CACHE")
    if override:
        return pathlib.Path(override).expanduser()
    return pathlib.Path.home() / ".cache" / "effc" / "zoo" / ZOO_VERSION


def model_files(name: str, folder: pathlib.Path) -> ZooModel:
    """The paths `name`'s files have inside `folder`."""
    _check_name(name)
    folder = pathlib.Path(folder)
    eval_suffix = "test" if name == "digits" else "eval"
    return ZooModel(name, folder / f"{name}.onnx", folder / f"{name}_calib.npz",
                    folder / f"{name}_{eval_suffix}.npz", has_labels=name in ("digits", "ds_cnn"))


def get(name: str) -> ZooModel:
    """The model's files; digits ships in git, the others are built into cache_dir() on first use."""
    _check_name(name)
    if name == "digits":
        return model_files(name, SHIPPED_DIR)
    return ensure_built(name)


def ensure_built(name: str, force: bool = False) -> ZooModel:
    """Build a cached model if it is missing (or always, with force); safe to call from concurrent processes."""
    _check_name(name)
    if name == "digits":
        raise ValueError("digits ships in git; rebuild it with `python -m effc.zoo.build digits`")
    model = model_files(name, cache_dir() / name)
    if model.exists() and not force:
        return model
    model.onnx_path.parent.mkdir(parents=True, exist_ok=True)
    with open(model.onnx_path.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if force or not model.exists():
            from effc.zoo.build import build_model

            build_model(name, model)
    return model


def wheel_file(package: str, *parts: str) -> pathlib.Path:
    """A file a package of the zoo extra ships (trained models in their wheels), found without importing the package
    (their imports pull in OpenCV, torch or loggers); FileNotFoundError with the install line if it is absent."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"this zoo model needs {package}: pip install 'effc[zoo]'")
    path = pathlib.Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing from the installed {package}")
    return path


def _check_name(name: str) -> None:
    if name not in ZOO_NAMES:
        raise ValueError(f"unknown zoo model {name!r}; known: {', '.join(ZOO_NAMES)}")
