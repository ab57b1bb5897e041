"""The unpaid queries a round may buy, and the choice among them.

Seeded: every prefix of the training histories (the seeded source with `prefixes="all"`, in its
seeded order), grouped by user. Data-free: sequences grown from the student's own answers, as
the autoregressive source grows them from the black box's (a random first item, then one of the
answer's top 100 until a length drawn uniformly up to `max_length`), every prefix a candidate,
grouped by sequence; growing them costs student passes, not paid queries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from extractor.config import ExtractConfig
from extractor.prefixes import Prefixes
from extractor.run import capped, dataset_histories
from extractor.sources import seeded_queries
from seqrec.data.sequences import Sequences
from seqrec.inference import scores_and_history
from seqrec.models.base import SequentialRecommender

SAMPLE_FROM_TOP = 100  # as the autoregressive source samples the black box's answer


Answer = list[str] | None  # a paid answer's items, best first (None: none paid)


@dataclass(frozen=True)
class Candidates:
    """Queries in raw ids, the group of each (one user, or one grown sequence) and, where
    known, the teacher's paid answer to its nearest paid query (`hints`: what the teacher
    said close by, so a student answer far from it is likely wrong)."""

    queries: Prefixes
    groups: np.ndarray  # int64 [n]
    hints: list[Answer] | None = None

    def __len__(self) -> int:
        return len(self.queries)

    def subset(self, positions: np.ndarray) -> Candidates:
        hints = None if self.hints is None else [self.hints[p] for p in positions.tolist()]
        return Candidates(self.queries.subset(positions), self.groups[positions], hints)


def with_nearest_answers(pool: Candidates, answers: dict[str, Answer]) -> Candidates:
    """The pool with each candidate's hint: the paid answer (`answers`, by history text) of
    the paid candidate of its group nearest in length, the shorter one on a tie (None when
    its group has none paid)."""
    texts = pool.queries.texts()
    paid = np.fromiter((text in answers for text in texts), bool, len(texts))
    lengths = pool.queries.length
    keys = pool.groups * (int(lengths.max(initial=0)) + 1) + lengths
    by_key = np.flatnonzero(paid)[np.argsort(keys[paid], kind="stable")]
    after = np.searchsorted(keys[by_key], keys)  # the first paid at or above each key
    hints: list[Answer] = []
    for position, at in enumerate(after.tolist()):
        near = [by_key[i] for i in (at - 1, at) if 0 <= i < len(by_key)]
        near = [i for i in near if pool.groups[i] == pool.groups[position]]
        best = min(near, key=lambda i: abs(int(lengths[i]) - int(lengths[position])), default=None)
        hints.append(None if best is None else answers[texts[best]])
    return Candidates(pool.queries, pool.groups, hints)


def seeded_candidates(config: ExtractConfig) -> Candidates:
    """Every prefix of the seeded histories in the seeded order, grouped by user."""
    users = dataset_histories(config)
    every = seeded_queries(users, "all", seed=config.seed)
    groups = np.searchsorted(users.begin, every.begin, side="right") - 1
    return Candidates(capped(every, config.history_cap), groups)


def dense(queries: Prefixes, item_ids: list[str]) -> tuple[Sequences, np.ndarray]:
    """The queries in a student's dense ids (items it does not know left out), and which of
    them kept at least one item (the others cannot be scored)."""
    index = {raw: i for i, raw in enumerate(item_ids, start=1)}
    rows = [[index[raw] for raw in query if raw in index] for query in queries]
    kept = np.fromiter((bool(row) for row in rows), bool, len(rows))
    return Sequences.from_lists([row for row in rows if row]), kept


def dense_hints(pool: Candidates, item_ids: list[str], width: int) -> np.ndarray:
    """[n, width] each candidate's hint in the student's dense ids, its first `width` items
    the student knows and the candidate does not hold (a student ranks only unseen items),
    padded with -1 (no hint: all -1)."""
    if pool.hints is None:
        raise ValueError("these candidates carry no paid answers to compare with")
    index = {raw: i for i, raw in enumerate(item_ids, start=1)}
    rows = np.full((len(pool), width), -1, np.int64)
    for row, (query, hint) in enumerate(zip(pool.queries, pool.hints, strict=True)):
        held = set(query)
        known = [index[item] for item in hint or () if item in index and item not in held]
        rows[row, : min(width, len(known))] = known[:width]
    return rows


@torch.no_grad()
def grown_candidates(
    model: SequentialRecommender,
    item_ids: list[str],
    n_candidates: int,
    max_length: int,
    rng: np.random.Generator,
) -> Candidates:
    """Sequences grown from the student's answers until they hold about `n_candidates`
    prefixes; every prefix is a candidate, grouped by its sequence."""
    model.eval()
    per_sequence = (max_length + 1) / 2  # the mean of target lengths drawn from 1..max_length
    n = max(1, math.ceil(n_candidates / per_sequence))
    targets = rng.integers(1, max_length + 1, size=n)
    sequences = [[int(item)] for item in rng.integers(1, len(item_ids) + 1, size=n)]
    for _ in range(1, max_length):
        growing = [s for s, target in enumerate(targets) if len(sequences[s]) < target]
        if not growing:
            break
        histories = Sequences.from_lists([sequences[s] for s in growing])
        scores, seen = scores_and_history(model, histories, np.arange(len(growing)))
        top = min(SAMPLE_FROM_TOP, len(item_ids))
        best = scores.masked_fill(seen, float("-inf")).topk(top, dim=1)
        unseen = torch.isfinite(best.values).sum(1).cpu().numpy()  # -inf: already in it
        picks = np.minimum((rng.random(len(growing)) * unseen).astype(np.int64), top - 1)
        chosen = best.indices[torch.arange(len(growing)), torch.as_tensor(picks)].tolist()
        for s, item, left in zip(growing, chosen, unseen.tolist(), strict=True):
            if left:
                sequences[s].append(int(item))
            else:  # every item is in it already
                targets[s] = len(sequences[s])
    raw = [[item_ids[i - 1] for i in sequence] for sequence in sequences]
    whole = Prefixes.of(raw)
    counts = whole.length
    positions = np.repeat(np.arange(n), counts)
    lengths = np.concatenate([np.arange(1, c + 1) for c in counts.tolist()])
    return Candidates(whole.heads(positions, lengths), positions)


def answer_candidates(
    paid: Prefixes,
    answers: list[list[str] | None],
    n_candidates: int,
    max_length: int,
    rng: np.random.Generator,
) -> Candidates:
    """About `n_candidates` queries one item longer than a paid query, the item drawn from its
    paid answer's top 100 (not already in it), as the autoregressive source grows its
    sequences: a branch where the source went on, a continuation where it stopped. The
    teacher's own answers, so they cost nothing and stay on the path the teacher leads, where
    the student's answers may stray. Grouped by first item, the grown sequence they branch
    from (the source starts each sequence at a different item); each hinted with the answer
    it grew from."""
    usable = [q for q, answer in enumerate(answers) if answer and paid.length[q] < max_length]
    if not usable:
        return Candidates(Prefixes.of([]), np.zeros(0, np.int64), [])
    queries: list[list[str]] = []
    hints: list[Answer] = []
    for q in rng.choice(usable, size=n_candidates).tolist():
        history = list(paid[q])
        held = set(history)
        top = [item for item in answers[q][:SAMPLE_FROM_TOP] if item not in held]
        if top:
            queries.append([*history, top[int(rng.integers(len(top)))]])
            hints.append(answers[q])
    firsts = {item: g for g, item in enumerate(dict.fromkeys(query[0] for query in queries))}
    groups = np.fromiter((firsts[query[0]] for query in queries), np.int64, len(queries))
    return Candidates(Prefixes.of(queries), groups, hints)


def choose(scores: np.ndarray, groups: np.ndarray, n: int, group_share: float) -> np.ndarray:
    """Positions of `n` best-scored candidates, best first, where no group gives more than
    `group_share` times its even share of `n` (at least one) while others have candidates
    left: each group's best up to that cap, the best of those over all groups, then, if that
    is short of `n`, the best of the rest."""
    n = min(n, len(scores))
    cap = max(1, math.ceil(group_share * n / max(1, len(np.unique(groups)))))
    by_group = np.lexsort((-scores, groups))  # groups together, best first within each
    sorted_groups = groups[by_group]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    rank = np.arange(len(groups)) - np.repeat(starts, np.diff(np.r_[starts, len(groups)]))
    allowed = by_group[rank < cap]
    first = allowed[np.argsort(-scores[allowed], kind="stable")][:n]
    if len(first) == n:
        return first
    rest = np.setdiff1d(np.arange(len(scores)), first)
    rest = rest[np.argsort(-scores[rest], kind="stable")]
    return np.concatenate([first, rest[: n - len(first)]])
