"""The package tree's import rules, read from the source: data flows one way (import -> passes -> backend ->
artifact -> run/profile), the CLI only calls the library, and pass families never import each other."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "effc"
FAMILIES = ("lossless", "prune", "cluster", "int8", "precision")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """The effc modules `path` imports (absolute), at module level only or anywhere in it."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name == "effc" or name.startswith("effc.")}


SOURCES = sorted(ROOT.rglob("*.py"))


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_import_rules(path):
    me = module_name(path)
    every, top = imports(path), imports(path, top_level_only=True)
    if not within(me, "effc.cli") and me != "effc.cli":
        assert not any(within(n, "effc.cli") for n in every), f"{me} imports the CLI"
    if within(me, "effc.backends") or within(me, "effc.runners"):
        assert not any(within(n, "effc.profile") for n in every), f"{me} (a backend or runner) imports the profiler"
    for family in FAMILIES:
        if within(me, f"effc.passes.{family}"):
            others = [n for n in every if within(n, "effc.passes") and not within(n, f"effc.passes.{family}")]
            assert others == [], f"{me} imports another pass family: {others}"
    if any(within(me, core) for core in ("effc.ir", "effc.analysis", "effc.pipeline", "effc.targets")):
        later = [n for n in top if any(within(n, p) for p in ("effc.passes", "effc.backends", "effc.runners",
                                                                "effc.profile", "effc.artifact", "effc.compiler"))]
        assert later == [], f"{me} (core) imports a later stage at module level: {later}"


def test_every_module_imports_and_passes_live_where_their_name_says():
    for path in SOURCES:
        if path.name != "__main__.py":
            importlib.import_module(module_name(path))
    import effc

    for name, cls in effc.registered_passes().items():
        family = cls.__module__.split(".")[2]
        assert family in FAMILIES, (name, cls.__module__)
    assert effc.registered_passes()["prune"].__module__ == "effc.passes.prune.prune"
    assert effc.registered_passes()["int8"].__module__ == "effc.passes.int8.int8"
    assert effc.registered_passes()["cluster"].__module__ == "effc.passes.cluster.cluster"
