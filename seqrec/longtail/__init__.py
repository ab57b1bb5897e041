"""Long-tail tools for HPSERec: the popularity partition and the Sinkhorn feedback distance."""

from seqrec.longtail.partition import bin_edges, optimal_cuts, partition_items, segment_costs
from seqrec.longtail.sinkhorn import cosine_cost, sinkhorn_distance, sinkhorn_plan

__all__ = [
    "bin_edges",
    "cosine_cost",
    "optimal_cuts",
    "partition_items",
    "segment_costs",
    "sinkhorn_distance",
    "sinkhorn_plan",
]
