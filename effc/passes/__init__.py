"""The built-in passes, one sub-package per family; importing this package registers them by name.

| family | registered names | module |
|---|---|---|
| lossless | fold-constants, remove-identity, dedup-initializers, cse, dce | lossless/cleanup.py |
| lossless | fold-pad, fold-scale | lossless/fold_conv.py |
| lossless | fold-bn, fuse | lossless/fusion.py |
| lossless | strip-names | lossless/strip_names.py |
| prune | prune | prune/prune.py |
| cluster | cluster | cluster/cluster.py |
| int8 | int8 | int8/int8.py |
| precision | fp16 | precision/fp16.py |

Named pipelines (`default`) are in pipelines.py. Families never import each other: what two of them share lives
in effc.ir (graph helpers, folding) or effc.analysis (channel groups, least squares, layer inputs, statistics).
"""

from effc.passes import (  # noqa: F401  (importing registers them)
    cluster,
    int8,
    lossless,
    pipelines,  # noqa: F401  (registers the named pipelines)
    precision,
    prune,
)
