"""The Relax pipeline for CPU targets: legalize, fuse, schedule, lower.

Placeholder until the default schedules land: TVM's generic CPU pipeline (naive loops).
"""

from __future__ import annotations


def relax_pipeline(target, *, tuning_db: str | None = None):
    """The complete Relax pipeline (a tvm.transform.Pass) for `target`, given to `tvm.compile(..., relax_pipeline=...)`."""
    from tvm import relax

    return relax.get_default_pipeline(target)
