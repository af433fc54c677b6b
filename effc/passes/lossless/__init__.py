"""Lossless passes: cleanup (folding, identities, CSE, dedup, dead code), Conv folding, fusion, name stripping."""

from effc.passes.lossless import cleanup, fold_conv, fusion, strip_names  # noqa: F401
