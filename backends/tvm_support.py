"""What must hold before TVM lowering starts: constants folded, every op importable, every dim pinned."""

from __future__ import annotations

import functools

from effc.errors import EffcError
from effc.ir import Model


@functools.cache
def tvm_importable_ops() -> frozenset[str]:
    from tvm.relax.frontend.onnx import onnx_frontend

    # "If" is converted by the graph importer itself, not through the converter table.
    return frozenset(onnx_frontend._get_convert_map()) | {"If"}


def unsupported_nodes(model: Model) -> list[tuple[str, str]]:
    """(node name, op) of every node the TVM ONNX frontend cannot convert."""
    ops = tvm_importable_ops()
    return [(n.name, n.op if not n.domain or n.domain == "ai.onnx" else f"{n.domain}.{n.op}")
            for n in model.graph.nodes
            if n.op not in ops or (n.domain not in ("", "ai.onnx", None))]


def fold_constants(model: Model) -> Model:
    """A copy of `model` with every constant subgraph folded: compressed weights decoded, constant QDQ weights
    dequantized (TVM lowers QDQ to float math anyway), shape arithmetic evaluated."""
    folded = model.copy()
    folded.graph.fold_constants(size_threshold=None)
    folded.cleanup()
    return folded


def check_lowerable(model: Model) -> None:
    """Raise EffcError naming every node TVM cannot import, or every input with a dynamic dim."""
    bad = unsupported_nodes(model)
    if bad:
        listed = ", ".join(f"{name} ({op})" for name, op in bad[:8])
        more = f" and {len(bad) - 8} more" if len(bad) > 8 else ""
        raise EffcError(f"TVM cannot import {len(bad)} node(s): {listed}{more}; remove them or use --target ort")
    dynamic = [spec for spec in model.input_specs() if not spec.is_static]
    if dynamic:
        spec = dynamic[0]
        dims = ",".join(str(d) for d in spec.shape or ["?"])
        raise EffcError(f"input {spec.name!r} has dynamic shape [{dims}]: pin it with --input-shape "
                        f"{spec.name}=" + ",".join(str(d) if isinstance(d, int) else "1" for d in spec.shape or [1]))
