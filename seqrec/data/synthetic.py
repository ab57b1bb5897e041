"""Seeded long-tailed interaction logs at any scale, for tests and scale benchmarks.

Item popularity follows a Zipf law and history lengths a shifted Pareto (Lomax) law, the two
long tails that head/tail metrics are about. Like MovieLens and Amazon, an item appears at most
once in a user's history. Everything is vectorised numpy: no Python loop per user or per
interaction. This is not real data and supports no quality claims.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported where the frame is built, as in `seqrec.data.readers`
    import pandas as pd

LENGTH_SHAPE = 3.0  # Lomax shape: a heavy tail whose variance is still finite
OVERSAMPLE = 1.25  # draws per missing item in each round; repeats within a user are dropped
MAX_ROUNDS = 8
START_TIME = 946_684_800  # 2000-01-01 UTC; first interactions spread over the next 20 years
START_SPAN = 20 * 365 * 86_400
MEAN_GAP = 6 * 3_600  # seconds between a user's consecutive interactions, on average


def generate_synthetic(
    n_users: int,
    n_items: int,
    mean_length: float = 30,
    zipf_exponent: float = 1.1,
    min_length: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """An interaction frame of `n_users` users, grouped by user, timestamps increasing.

    Lengths are `min_length` plus a Lomax draw with mean `mean_length - min_length`, capped at
    `n_items`. An item appears at most once per user; a history close to `n_items` long can come
    out shorter than drawn, since distinct tail items are slow to draw.
    """
    if n_users < 1 or n_items < 1:
        raise ValueError(f"need at least one user and one item, got {n_users} and {n_items}")
    if not 1 <= min_length <= min(mean_length, n_items):
        raise ValueError(
            f"need 1 <= min_length ({min_length}) <= mean_length ({mean_length}) and n_items"
        )
    import pandas as pd

    rng = np.random.default_rng(seed)
    lengths = history_lengths(rng, n_users, mean_length, min_length, n_items)
    users, items = _distinct_items(rng, lengths, n_items, zipf_exponent)
    return pd.DataFrame(
        {
            "user": _string_ids(users, n_users),
            "item": _string_ids(items, n_items),
            "timestamp": _timestamps(rng, users, n_users),
        }
    )


def history_lengths(
    rng: np.random.Generator, n_users: int, mean_length: float, min_length: int, n_items: int
) -> np.ndarray:
    """Heavy-tailed lengths >= min_length with the requested mean (before the n_items cap)."""
    scale = (mean_length - min_length) * (LENGTH_SHAPE - 1)
    extra = np.rint(scale * rng.pareto(LENGTH_SHAPE, size=n_users)).astype(np.int64)
    return np.minimum(min_length + extra, n_items)


def zipf_weights(n_items: int, exponent: float) -> np.ndarray:
    """Probability of the item of popularity rank r (0-based) is proportional to (r+1)^-s."""
    weights = np.arange(1, n_items + 1, dtype=np.float64) ** -exponent
    return weights / weights.sum()


def _distinct_items(
    rng: np.random.Generator, lengths: np.ndarray, n_items: int, exponent: float
) -> tuple[np.ndarray, np.ndarray]:
    """(user, item) pairs grouped by ascending user: `lengths[u]` distinct Zipf draws for u.

    Draw, drop repeats, and draw again only for the users still short; a few rounds suffice
    unless a history nears `n_items`, in which case it may stay short after MAX_ROUNDS. Each
    history is shuffled at the end so that its order says nothing about popularity.
    """
    n_users = len(lengths)
    probabilities = zipf_weights(n_items, exponent)
    relabel = rng.permutation(n_items)  # so that item ids say nothing about popularity
    users = items = np.empty(0, dtype=np.int64)
    for round_ in range(MAX_ROUNDS):
        missing = lengths - np.bincount(users, minlength=n_users)
        if not missing.any():
            break
        # Users still short after a round mostly repeat head items, so draw ever more per gap.
        draws = np.ceil(missing * OVERSAMPLE * 2.0**round_).astype(np.int64)
        new_users = np.repeat(np.arange(n_users, dtype=np.int64), draws)
        new_items = relabel[rng.choice(n_items, size=len(new_users), p=probabilities)]
        redo = missing[users] > 0
        # Stable sort keeps a user's earlier items ahead of new draws, so repeats drop the new.
        pool_users = np.concatenate([users[redo], new_users])
        pool_items = np.concatenate([items[redo], new_items])
        order = np.argsort(pool_users, kind="stable")
        pool_users, pool_items = pool_users[order], pool_items[order]
        _, first = np.unique(pool_users * n_items + pool_items, return_index=True)
        first.sort()
        pool_users, pool_items = pool_users[first], pool_items[first]
        fits = _position_in_group(pool_users, n_users) < lengths[pool_users]
        users = np.concatenate([users[~redo], pool_users[fits]])
        items = np.concatenate([items[~redo], pool_items[fits]])
    # Sort by user plus a random fraction: shuffles each history (refills must not come last).
    order = np.argsort(users + rng.random(len(users)))
    return users[order], items[order]


def _position_in_group(owners: np.ndarray, n_groups: int) -> np.ndarray:
    """0, 1, 2, ... within each run of equal (ascending) owners."""
    counts = np.bincount(owners, minlength=n_groups)
    starts = np.cumsum(counts) - counts
    return np.arange(len(owners)) - starts[owners]


def _timestamps(rng: np.random.Generator, users: np.ndarray, n_users: int) -> np.ndarray:
    """Strictly increasing within each user: a random start plus cumulative positive gaps."""
    starts = START_TIME + rng.integers(0, START_SPAN, size=n_users)
    gaps = 1 + rng.exponential(MEAN_GAP, size=len(users)).astype(np.int64)
    elapsed = np.cumsum(gaps)
    first = _position_in_group(users, n_users) == 0
    # Subtract what earlier users accumulated, so each user's clock restarts at its start.
    before = np.maximum.accumulate(np.where(first, elapsed - gaps, 0))
    return starts[users] + elapsed - before


def _string_ids(dense: np.ndarray, n: int) -> pd.Series:
    """Raw ids "1".."n": convert the n distinct names once, then gather them."""
    import pandas as pd

    names = pd.Series(np.arange(1, n + 1).astype(str), dtype=str)
    return names.take(dense).reset_index(drop=True)
