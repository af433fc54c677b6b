"""Structured pruning (`prune`): channels removed consistently across the graph, then refit from calibration data."""

from effc.passes.prune.prune import Prune

__all__ = ["Prune"]
