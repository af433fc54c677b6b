"""Named pipelines, usable in a spec like a pass: `default` is the lossless cleanup and fusion to a fixed point."""

from __future__ import annotations

from effc.passes.lossless.cleanup import (
    CommonSubexpressions,
    DeadCodeElimination,
    DedupInitializers,
    FoldConstants,
    RemoveIdentity,
)
from effc.passes.lossless.fold_conv import FoldPad, FoldScale
from effc.passes.lossless.fusion import FoldBatchNorm, Fuse
from effc.pipeline.steps import FixedPoint, register_pipeline


def default_pipeline():
    return [FixedPoint([FoldConstants(), RemoveIdentity(), DedupInitializers(), CommonSubexpressions(),
                        FoldBatchNorm(), FoldPad(), FoldScale(), Fuse(), DeadCodeElimination()])]


register_pipeline("default", default_pipeline)
