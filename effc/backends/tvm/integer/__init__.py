"""Integer lowering of QDQ models: the QDQ islands of effc's int8 pass become integer Relax (rewrite.py), on any
target; what it cannot rewrite stays float and is reported (`Island`)."""

from effc.backends.tvm.integer.params import bind_params, lift_constants
from effc.backends.tvm.integer.rewrite import Island, lower_qdq

__all__ = ["Island", "bind_params", "lift_constants", "lower_qdq"]
