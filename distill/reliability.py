"""Reliability c(s) of each probed query: how far the teacher's answer survives truncation.

This is recmimic's own specification (DESIGN section 6; the BAHSD paper gives the idea, not the
formula). For a query s with full answer T_0 and truncated views v_1..v_m answered T_1..T_m:

    c(s) = mean over usable views m of agreement(top(T_0), top(T_m))

A view is usable when it was answered and is shorter than the full history (a view equal to the
full history says nothing about stability). Two agreement measures, both in [0, 1]:

- `overlap`: |top(T_0) ∩ top(T_m)| / top. Order within the top does not matter. Item id 0 is
  padding and never counts; an answer with fewer than `top` items is still divided by `top`, so
  a short answer cannot look fully reliable.
- `rbo`: rank-biased overlap truncated at depth d = top with persistence p,

      RBO = (1 - p) / (1 - p^d) * sum_{i=1..d} p^(i-1) * |S[:i] ∩ T[:i]| / i,

  normalised by (1 - p^d) so two identical full lists score 1; early ranks weigh more.

Queries with no usable view (histories too short to truncate, or failed views) get the median of
their history-length bucket, then the global median, then 0.5. The length-normalised variant is
c - (its bucket's median) + 0.5, clipped to [0, 1]: raw reliability tends to fall as histories
grow, and the variant removes that trend so only the deviation within a length bucket remains.

Everything is vectorised over queries (processed in chunks to bound memory).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from extractor.probeset import LENGTH_LABELS, length_bucket

# Queries per chunk: the pairwise match tensor is [chunk, V, top, top] booleans.
_CHUNK = 1 << 16


@dataclass(frozen=True)
class ReliabilityConfig:
    """How agreement between the full answer and a truncated view's answer is measured."""

    measure: Literal["overlap", "rbo"] = "overlap"
    top: int = 10
    rbo_p: float = 0.9
    normalise: bool = False  # length-normalised variant: c - bucket median + 0.5, clipped


def _first_occurrence(lists: np.ndarray) -> np.ndarray:
    """True where a slot holds a real item (non-zero) not already seen earlier in its list."""
    top = lists.shape[-1]
    earlier = np.tril(np.ones((top, top), dtype=bool), k=-1)
    repeated = ((lists[..., :, None] == lists[..., None, :]) & earlier).any(-1)
    return (lists != 0) & ~repeated


def _agreement_chunk(full: np.ndarray, views: np.ndarray, config: ReliabilityConfig) -> np.ndarray:
    """[q, V] agreement of each view's top list with the full top list."""
    full_ok = _first_occurrence(full)  # [q, top]
    view_ok = _first_occurrence(views)  # [q, V, top]
    # match[q, v, a, b]: view slot a holds the same real item as full slot b.
    match = (
        (views[:, :, :, None] == full[:, None, None, :])
        & view_ok[:, :, :, None]
        & full_ok[:, None, None, :]
    )
    top = config.top
    if config.measure == "overlap":
        return match.sum(axis=(-2, -1)) / top
    if config.measure == "rbo":
        # Items shared by both prefixes of depth i = sum of matches with a < i and b < i.
        shared = match.cumsum(axis=-2).cumsum(axis=-1)
        depth = np.arange(1, top + 1)
        prefix_overlap = shared[..., depth - 1, depth - 1] / depth  # [q, V, top]
        p = config.rbo_p
        weights = p ** (depth - 1) * (1 - p) / (1 - p**top)
        return prefix_overlap @ weights
    raise ValueError(f"unknown reliability measure {config.measure!r}")


def view_agreement(
    full_topk: np.ndarray, view_topk: np.ndarray, usable: np.ndarray, config: ReliabilityConfig
) -> np.ndarray:
    """[Q] mean agreement over usable views; NaN where no view is usable.

    full_topk [Q, k] int, view_topk [Q, V, k] int (0 = no item), usable [Q, V] bool (the view
    answered and is shorter than the full history). Only the first `config.top` slots count.
    """
    full = np.asarray(full_topk)[:, : config.top]
    views = np.asarray(view_topk)[:, :, : config.top]
    usable = np.asarray(usable, dtype=bool)
    if views.shape[:2] != usable.shape or full.shape[0] != usable.shape[0]:
        raise ValueError(
            f"shapes disagree: full {full.shape}, views {views.shape}, usable {usable.shape}"
        )
    n_queries = full.shape[0]
    totals = np.zeros(n_queries)
    for start in range(0, n_queries, _CHUNK):
        stop = start + _CHUNK
        agreement = _agreement_chunk(full[start:stop], views[start:stop], config)
        totals[start:stop] = np.where(usable[start:stop], agreement, 0.0).sum(axis=1)
    counts = usable.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, totals / counts, np.nan)


def _bucket_medians(values: np.ndarray, buckets: np.ndarray) -> np.ndarray:
    """Median of the non-NaN values of each length bucket; NaN for a bucket with none."""
    medians = np.full(len(LENGTH_LABELS), np.nan)
    for bucket in range(len(LENGTH_LABELS)):
        known = values[(buckets == bucket) & ~np.isnan(values)]
        if known.size:
            medians[bucket] = np.median(known)
    return medians


def reliability(
    full_topk: np.ndarray,
    view_topk: np.ndarray,
    usable: np.ndarray,
    history_lengths: np.ndarray,
    config: ReliabilityConfig,
) -> np.ndarray:
    """[Q] reliability in [0, 1], every query filled (see the module docstring for fallbacks).

    With `config.normalise`, a query with no usable view gets exactly 0.5: it has no deviation
    from its bucket's median to report.
    """
    raw = view_agreement(full_topk, view_topk, usable, config)
    buckets = length_bucket(np.asarray(history_lengths))
    bucket_median = _bucket_medians(raw, buckets)[buckets]
    if config.normalise:
        centred = np.where(np.isnan(raw), 0.5, raw - bucket_median + 0.5)
        return np.clip(centred, 0.0, 1.0)
    known = raw[~np.isnan(raw)]
    global_median = float(np.median(known)) if known.size else 0.5
    filled = np.where(np.isnan(raw), bucket_median, raw)
    return np.where(np.isnan(filled), global_median, filled)


def reliability_by_bucket(
    c: np.ndarray, history_lengths: np.ndarray
) -> dict[str, dict[str, float]]:
    """Per non-empty length bucket: n, mean and median of c (NaN values not counted).

    For the probe-set summary, so the benchmark can see whether reliability merely tracks
    history length; empty buckets are left out, as in `extractor.probeset.summary`.
    """
    c = np.asarray(c, dtype=float)
    buckets = length_bucket(np.asarray(history_lengths))
    report: dict[str, dict[str, float]] = {}
    for index, label in enumerate(LENGTH_LABELS):
        values = c[(buckets == index) & ~np.isnan(c)]
        if values.size:
            report[label] = {
                "n": int(values.size),
                "mean": float(values.mean()),
                "median": float(np.median(values)),
            }
    return report
