"""Lossless cleanup passes."""

from __future__ import annotations

from effc.ir import Model
from effc.passbase import Pass, PassResult, register_pass
from effc.pipeline import register_pipeline


@register_pass
class DeadCodeElimination(Pass):
    """Remove nodes and initializers that no graph output depends on."""

    name = "dce"
    kind = "lossless"

    def run(self, model: Model, ctx) -> PassResult:
        nodes, tensors = len(model.graph.nodes), len(model.graph.tensors())
        model.cleanup()
        removed = nodes - len(model.graph.nodes)
        return PassResult(removed > 0 or tensors != len(model.graph.tensors()), {"nodes_removed": removed})


register_pipeline("default", lambda: [DeadCodeElimination()])
