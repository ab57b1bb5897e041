"""Query sources: the histories the extractor asks the black box about (DESIGN.md section 5).

A history is a list of raw item ids (strings, the black box's own ids), oldest first. Every
source is deterministic for a given seed; the data-free ones also depend on the black box's
answers, so they repeat exactly when the black box (or the cache in front of it) does.

- `seeded_queries`: prefixes of real histories the user supplies.
- `autoregressive`: data-free synthesis (Yue et al., RecSys'21): grow sequences from random
  catalogue items by appending an item sampled from the black box's own top-k; with
  `frequency_beta > 0` the sample favours items chosen rarely so far (the frequency control of
  the CIKM'25 cost-aware attack), which spreads the queries over more of the catalogue.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from extractor.prefixes import History, Prefixes

Answer = Sequence[str] | None  # the black box's top-k, best first; None when it failed
Ask = Callable[[list[History]], Awaitable[Sequence[Answer]]]
LengthDistribution = Literal["uniform", "log-uniform"]


def seeded_queries(
    histories: Sequence[Sequence[str]] | Prefixes,
    prefixes: Literal["all"] | int = "all",
    min_length: int = 1,
    seed: int = 0,
    whole_first: bool = False,
) -> Prefixes:
    """Prefixes of real histories as queries, in a seeded random order.

    The order is shuffled so that a budget smaller than the whole set spreads over every user
    instead of exhausting itself on the first users' prefixes. `whole_first`: every user's
    whole history comes before any shorter prefix (each group shuffled), and a sample of
    `prefixes` per user always holds it; a budget that cannot buy everything then buys first
    the histories a replica will be asked about, the users' current ones.

    Pass the TRAINING split only (for leave-one-out data: each history without its validation
    and test items), as lists of id strings or as `Prefixes` of whole histories. Every query is
    a prefix of a given history, so a held-out item reaches the black box only if the caller
    passed it in. `prefixes="all"` takes every prefix of at least `min_length` items (the whole
    history included); an int takes that many of them per user, sampled without replacement
    (all of them when a user has fewer).
    """
    if prefixes != "all" and (isinstance(prefixes, bool) or not isinstance(prefixes, int)):
        raise ValueError(f"prefixes must be 'all' or a positive int, got {prefixes!r}")
    if prefixes != "all" and prefixes < 1:
        raise ValueError(f"prefixes must be at least 1, got {prefixes}")
    if min_length < 1:
        raise ValueError(f"min_length must be at least 1, got {min_length}")
    whole = histories if isinstance(histories, Prefixes) else Prefixes.of(histories)
    rng = np.random.default_rng(seed)
    counts = np.maximum(whole.length - min_length + 1, 0)
    if prefixes == "all":
        firsts = np.cumsum(counts) - counts  # each user's first query
        lengths = np.arange(counts.sum()) - np.repeat(firsts, counts) + min_length
    else:
        per_user = []
        for n in whole.length.tolist():  # one draw per user with more prefixes than asked
            candidates = np.arange(min_length, n + 1)
            if len(candidates) > prefixes and whole_first:  # the whole history, and a sample
                shorter = rng.choice(candidates[:-1], size=prefixes - 1, replace=False)
                candidates = np.sort(np.append(shorter, n))
            elif len(candidates) > prefixes:
                candidates = np.sort(rng.choice(candidates, size=prefixes, replace=False))
            per_user.append(candidates)
        counts = np.fromiter(map(len, per_user), np.int64, len(per_user))
        lengths = np.concatenate([np.zeros(0, np.int64), *per_user])
    order = rng.permutation(len(lengths))
    users = np.repeat(np.arange(len(whole)), counts)[order]
    lengths = lengths[order]
    if whole_first:
        is_whole = lengths == whole.length[users]
        order = np.concatenate([np.flatnonzero(is_whole), np.flatnonzero(~is_whole)])
        users, lengths = users[order], lengths[order]
    return whole.heads(users, lengths)


@dataclass(frozen=True)
class AutoregressiveConfig:
    """How the data-free source grows its sequences.

    Each sequence gets a target length drawn from `lengths` over [min_length, max_length]
    ("uniform", or "log-uniform", which favours short histories the way real data does), so
    short and long histories both occur. The next item is drawn from the first
    `sample_from_top` items of the answer, never one already in the sequence; each candidate
    weighs `1 / (1 + times chosen so far) ** frequency_beta` (0: uniform, the RecSys'21 attack).

    Sequences grow `group_size` at a time, one group to its end before the next starts, so a
    budget that runs out buys whole sequences of the first groups. Grown all at once, a
    budget below what every sequence needs bought the short prefixes of all of them: 1,000
    sequences of uniform target lengths up to 50 items need about 73,500 answers (views
    included), and a budget of 20,000 stops at histories of 8 items, one of 5,000 at 2.
    """

    n_sequences: int
    min_length: int = 1
    max_length: int = 50
    lengths: LengthDistribution = "uniform"
    sample_from_top: int = 100
    frequency_beta: float = 0.0
    seed: int = 0
    group_size: int = 32

    def __post_init__(self) -> None:
        if self.group_size < 1:
            raise ValueError(f"group_size must be at least 1, got {self.group_size}")
        if self.n_sequences < 1:
            raise ValueError(f"n_sequences must be at least 1, got {self.n_sequences}")
        if not 1 <= self.min_length <= self.max_length:
            raise ValueError(
                f"need 1 <= min_length <= max_length, got {self.min_length}, {self.max_length}"
            )
        if self.lengths not in ("uniform", "log-uniform"):
            raise ValueError(f"lengths must be 'uniform' or 'log-uniform', got {self.lengths!r}")
        if self.sample_from_top < 1:
            raise ValueError(f"sample_from_top must be at least 1, got {self.sample_from_top}")
        if self.frequency_beta < 0:
            raise ValueError(f"frequency_beta must be >= 0, got {self.frequency_beta}")

    def draw_lengths(self, rng: np.random.Generator) -> np.ndarray:
        """One target length per sequence."""
        low, high = self.min_length, self.max_length
        if self.lengths == "uniform":
            return rng.integers(low, high + 1, size=self.n_sequences)
        drawn = np.exp(rng.uniform(math.log(low), math.log(high + 1), size=self.n_sequences))
        return np.clip(np.floor(drawn).astype(np.int64), low, high)


@dataclass(frozen=True)
class Step:
    """One lockstep round of a group: the prefixes asked (each a query) and their answers."""

    histories: list[History]
    answers: list[Answer]


async def autoregressive(
    config: AutoregressiveConfig, catalogue: Sequence[str], ask: Ask
) -> AsyncIterator[Step]:
    """Grow `config.n_sequences` sequences, `config.group_size` at a time in lockstep, one `ask`
    call (one batch) per step of a group.

    Step t of a group asks every sequence of it still growing at its current length-t prefix,
    so every prefix is a query and each is asked once. Start items are a seeded permutation of
    the catalogue (cycled when there are more sequences than items), so no two starts repeat a
    paid query while the catalogue lasts. A sequence stops at its target length, when its
    answer failed (None), or when the answer offers no item it does not already hold.
    """
    if not catalogue:
        raise ValueError("the catalogue is empty")
    rng = np.random.default_rng(config.seed)
    targets = config.draw_lengths(rng).tolist()
    order = np.resize(rng.permutation(len(catalogue)), config.n_sequences)
    sequences = [[str(catalogue[i])] for i in order.tolist()]
    members = [set(sequence) for sequence in sequences]
    counts = Counter(item for sequence in sequences for item in sequence)
    for first in range(0, config.n_sequences, config.group_size):
        growing = list(range(first, min(first + config.group_size, config.n_sequences)))
        while growing:
            histories = [list(sequences[i]) for i in growing]
            answers = list(await ask(histories))
            if len(answers) != len(histories):
                raise ValueError(f"ask answered {len(answers)} of {len(histories)} histories")
            yield Step(histories, answers)
            still = []
            for i, answer in zip(growing, answers, strict=True):
                if answer is None or len(sequences[i]) >= targets[i]:
                    continue
                top = [item for item in answer[: config.sample_from_top] if item not in members[i]]
                if not top:
                    continue
                item = _pick(top, counts, config.frequency_beta, rng.random())
                sequences[i].append(item)
                members[i].add(item)
                counts[item] += 1
                still.append(i)
            growing = still


def _pick(candidates: list[str], counts: Counter[str], beta: float, u: float) -> str:
    """Inverse-CDF draw with weights (1 + count) ** -beta; one uniform `u` whatever beta is."""
    chosen = np.array([counts[item] for item in candidates], dtype=np.float64)
    cdf = np.cumsum((1.0 + chosen) ** -beta)
    index = int(np.searchsorted(cdf, u * cdf[-1], side="right"))
    return candidates[min(index, len(candidates) - 1)]
