"""Built-in passes, one module per family; importing this package registers them."""

from effc.passes import cleanup, cluster, fusion, int8, prune, strip_names  # noqa: F401
