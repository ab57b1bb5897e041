"""Ragged per-user item sequences stored as one flat array plus offsets (CSR layout).

Every later stage (splitting, batching, evaluation, probing) works on this one structure so
that no code ever loops over users in Python on a hot path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sequences:
    """`items[offsets[u]:offsets[u+1]]` is user u's history, oldest first, dense ids >= 1."""

    items: np.ndarray  # int64 [total]
    offsets: np.ndarray  # int64 [n_users + 1]

    def __post_init__(self) -> None:
        if self.offsets.ndim != 1 or self.offsets[0] != 0 or self.offsets[-1] != len(self.items):
            raise ValueError("offsets must start at 0 and end at len(items)")

    @classmethod
    def from_lists(cls, lists: list[list[int]]) -> Sequences:
        lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
        offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = [i for seq in lists for i in seq]
        return cls(np.asarray(flat, dtype=np.int64), offsets)

    @property
    def n_users(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __getitem__(self, user: int) -> np.ndarray:
        return self.items[self.offsets[user] : self.offsets[user + 1]]

    def to_lists(self) -> list[list[int]]:
        return [self[u].tolist() for u in range(self.n_users)]

    def truncate_end(self, drop: int) -> Sequences:
        """Drop the last `drop` items of every sequence (used by the leave-one-out split)."""
        lengths = np.maximum(self.lengths - drop, 0)
        keep = _ragged_mask(self.offsets, lengths)
        offsets = np.zeros_like(self.offsets)
        np.cumsum(lengths, out=offsets[1:])
        return Sequences(self.items[keep], offsets)

    def last(self, back: int = 1) -> np.ndarray:
        """The item `back` positions from the end of every sequence (all must be long enough)."""
        if np.any(self.lengths < back):
            raise ValueError(f"every sequence needs at least {back} items")
        return self.items[self.offsets[1:] - back]

    def padded(self, max_len: int, users: np.ndarray | None = None) -> np.ndarray:
        """Left-padded matrix [n, max_len] of each selected user's most recent items (0 = pad)."""
        users = np.arange(self.n_users) if users is None else np.asarray(users, dtype=np.int64)
        return padded_windows(self.items, self.offsets[users], self.offsets[users + 1], max_len)

    def gather(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All items of the selected users as (row in `users`, item) pairs, without a loop."""
        users = np.asarray(users, dtype=np.int64)
        starts, lengths = self.offsets[users], self.lengths[users]
        rows = np.repeat(np.arange(len(users)), lengths)
        within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return rows, self.items[np.repeat(starts, lengths) + within]


def padded_windows(
    items: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int
) -> np.ndarray:
    """Left-padded rows [n, width] holding the last `width` items of each `items[start:end]`."""
    starts = np.maximum(starts, ends - width)
    out = np.zeros((len(ends), width), dtype=np.int64)
    # Column j of row r holds items[ends[r] - width + j] when that index is >= starts[r].
    src = ends[:, None] - width + np.arange(width)[None, :]
    valid = src >= starts[:, None]
    out[valid] = items[src[valid]]
    return out


def _ragged_mask(offsets: np.ndarray, keep_lengths: np.ndarray) -> np.ndarray:
    """Boolean mask over the flat array keeping the first `keep_lengths[u]` items of each user."""
    total = int(offsets[-1])
    position = np.arange(total) - np.repeat(offsets[:-1], np.diff(offsets))
    owner_keep = np.repeat(keep_lengths, np.diff(offsets))
    return position < owner_keep
