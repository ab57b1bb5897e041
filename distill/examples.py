"""Training examples from a probe set: which answers the student learns from, and in which batch.

An example is a history (a left-padded row), the teacher's answer to it, the reliability of the
query it came from, and the truncated views the InfoNCE term may contrast it with. By default
every method learns from every answered history, truncated views included, so all of them see
exactly the same paid answers; BAHSD also uses each query's views as probes (reliability,
InfoNCE).

Held-out probes are whole queries (a query and its views never straddle the split), drawn with
a seeded generator; the student is selected on them, never on real test data.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from distill.probes import ProbeData


@dataclass(frozen=True)
class Examples:
    """Parallel arrays, one row per example."""

    histories: np.ndarray  # [N, W] left-padded dense ids
    lengths: np.ndarray  # [N] history length (within the padded width)
    topk: np.ndarray  # [N, k] the teacher's answer, best first, 0-padded
    reliability: np.ndarray  # [N] c(s) of the query the example came from
    view_lengths: np.ndarray  # [N, V] truncated views usable for InfoNCE, 0 where none
    # [N, k] the black box's score of each answer slot and [N] whether the example has them
    # (full views whose answer came with scores); None when the probe set has no scores.
    scores: np.ndarray | None = None
    has_scores: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.lengths)

    def take(self, rows: np.ndarray) -> Examples:
        return Examples(*(None if value is None else value[rows] for value in _columns(self)))


def _columns(examples: Examples) -> list[np.ndarray | None]:
    return [getattr(examples, f.name) for f in fields(Examples)]


def suffixes(histories: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Each left-padded row cut to its most recent `lengths[i]` items (the rest zeroed)."""
    width = histories.shape[1]
    keep = np.arange(width)[None, :] >= width - np.asarray(lengths)[:, None]
    return np.where(keep, histories, 0)


def query_examples(probes: ProbeData, reliability: np.ndarray, queries: np.ndarray) -> Examples:
    """One example per query: its full view, with its usable truncated views for InfoNCE."""
    width = probes.histories.shape[1]
    lengths = np.minimum(probes.lengths[queries], width)
    views = np.where(probes.view_lengths[queries] < probes.lengths[queries, None], 1, 0)
    return Examples(
        histories=probes.histories[queries],
        lengths=lengths,
        topk=probes.topk[queries],
        reliability=reliability[queries],
        view_lengths=np.minimum(probes.view_lengths[queries] * views, width),
        scores=None if probes.scores is None else probes.scores[queries],
        has_scores=None if probes.has_scores is None else probes.has_scores[queries],
    )


def answered_view_examples(
    probes: ProbeData, reliability: np.ndarray, queries: np.ndarray
) -> Examples:
    """One example per answered truncated view of the given queries (no InfoNCE views, and no
    scores: the probe set keeps the full view's only)."""
    usable = probes.view_usable[queries]
    query, view = np.nonzero(usable)
    rows = queries[query]
    width, k = probes.histories.shape[1], probes.topk.shape[1]
    lengths = np.minimum(probes.view_lengths[rows, view], width)
    return Examples(
        histories=suffixes(probes.histories[rows], lengths),
        lengths=lengths,
        topk=probes.view_topk[rows, view],
        reliability=reliability[rows],
        view_lengths=np.zeros((len(rows), probes.view_lengths.shape[1]), dtype=np.int64),
        scores=None if probes.scores is None else np.zeros((len(rows), k), dtype=np.float32),
        has_scores=None if probes.has_scores is None else np.zeros(len(rows), dtype=bool),
    )


def concat(parts: list[Examples]) -> Examples:
    """The parts' rows in order; parts of one probe set all have scores or all have none."""
    columns = zip(*(_columns(part) for part in parts), strict=True)
    return Examples(*(None if values[0] is None else np.concatenate(values) for values in columns))


def heldout_split(n_queries: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) query indices; at least one query on each side when n >= 2."""
    if not 0 < share < 1:
        raise ValueError(f"held-out share must be in (0, 1), got {share}")
    if n_queries < 2:
        raise ValueError("need at least 2 answered queries to hold some out")
    order = np.random.default_rng(seed).permutation(n_queries)
    n_heldout = min(max(int(round(share * n_queries)), 1), n_queries - 1)
    return np.sort(order[n_heldout:]), np.sort(order[:n_heldout])


def pick_views(view_lengths: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One usable view length per row, uniformly among its usable views; 0 where it has none."""
    usable = view_lengths > 0
    draws = rng.random(view_lengths.shape) * usable
    choice = draws.argmax(axis=1)
    return np.where(usable.any(axis=1), view_lengths[np.arange(len(choice)), choice], 0)
