"""Weight sharing (`cluster`): k-means codebooks with narrow indices, refit from calibration data."""

from effc.passes.cluster.cluster import Cluster

__all__ = ["Cluster"]
