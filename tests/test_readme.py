"""The README's Python examples run as written, so they never go stale."""

from __future__ import annotations

import os
import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_example_runs(tmp_path, index, monkeypatch):
    (tmp_path / "effc").symlink_to(ROOT / "effc")
    monkeypatch.chdir(tmp_path)
    code = python_blocks()[index]
    module = types.ModuleType(f"readme_example_{index}")  # dataclasses look their module up in sys.modules
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    try:
        exec(compile(code, f"README.md python block {index}", "exec"), namespace)
    finally:
        from effc.pipeline.pass_base import _REGISTRY

        for name in [n for n, cls in _REGISTRY.items() if cls.__module__ == namespace["__name__"]]:
            _REGISTRY.pop(name)


def test_readme_has_python_examples():
    assert python_blocks(), "the README documents the Python API with at least one example"
    assert os.path.exists(ROOT / "scripts" / "test.sh")
