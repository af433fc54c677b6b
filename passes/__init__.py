"""Built-in passes, one module per family; importing this package registers them."""

from effc.passes import cleanup  # noqa: F401
