"""Which ONNX ops the TVM Relax frontend can import (checked before any compile work starts)."""

from __future__ import annotations

import functools

from effc.ir import Model


@functools.cache
def tvm_importable_ops() -> frozenset[str]:
    from tvm.relax.frontend.onnx import onnx_frontend

    return frozenset(onnx_frontend._get_convert_map())


def unsupported_nodes(model: Model) -> list[tuple[str, str]]:
    """(node name, op) of every node the TVM ONNX frontend cannot convert."""
    ops = tvm_importable_ops()
    return [(n.name, n.op if not n.domain or n.domain == "ai.onnx" else f"{n.domain}.{n.op}")
            for n in model.graph.nodes
            if n.op not in ops or (n.domain not in ("", "ai.onnx", None))]
