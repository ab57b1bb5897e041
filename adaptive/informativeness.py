"""How much the student is expected to learn from paying for a query: one score per candidate,
higher is more informative. Every score costs student forward passes only, never a paid query.

- `views`: BAHSD's reliability idea turned on the student: the share of its top 10 for the
  whole query that its top 10 for the most recent half of the query (of what it sees of it)
  does not hold. An answer that
  changes under truncation is one the student is unsure how to build.
- `margin`: how close the student's 10th and 11th items are (the negated gap of their scores):
  a top 10 the student barely separates from the rest is the one Agr@10 reads.
- `committee`: disagreement between `COMMITTEE` dropout samples of the student (one minus the
  mean overlap of their top 10s, over every pair).
- `neighbour`: how far the student's top 10 is from the teacher's paid answer to the nearest
  paid query (the same user's nearest prefix, or the query a grown candidate branched from):
  the only score that reads what the teacher said, so it points where the student is wrong,
  not merely unsure. A candidate with nothing paid near it scores highest.
- `random`: a uniform draw, the control that tells the rounds' worth from the scores'.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations

import numpy as np
import torch

from adaptive.config import Score
from seqrec.data.sequences import Sequences
from seqrec.inference import batches, scores_and_history
from seqrec.models.base import SequentialRecommender

TOP = 10
COMMITTEE = 4
BATCH = 1024


def _top(
    model: SequentialRecommender, histories: Sequences, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's k best unseen items for every history, best first: scores and ids [n, k]."""
    values, items = [], []
    for users in batches(histories.n_users, BATCH):
        scores, seen = scores_and_history(model, histories, users)
        best = scores.masked_fill(seen, float("-inf")).topk(k, dim=1)
        values.append(best.values)
        items.append(best.indices)
    return torch.cat(values), torch.cat(items)


def _top_items(model: SequentialRecommender, histories: Sequences) -> torch.Tensor:
    return _top(model, histories, TOP)[1]


def overlap(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """[n] share of each row of `a` (item ids) that the same row of `b` holds."""
    return (a[:, :, None] == b[:, None, :]).any(-1).float().mean(-1).cpu().numpy()


def recent_halves(histories: Sequences, window: int) -> Sequences:
    """The most recent half of what the student sees of each history: `ceil(min(n, window)
    / 2)` items. Halving the whole history instead would leave a history of more than twice
    the window unchanged in the student's eyes, so long queries would never look unsure."""
    keep = (np.minimum(histories.lengths, window) + 1) // 2
    rows = [histories[u][-k:] for u, k in enumerate(keep.tolist())]
    return Sequences.from_lists([row.tolist() for row in rows])


def views_score(
    model: SequentialRecommender, histories: Sequences, rng: np.random.Generator
) -> np.ndarray:
    model.eval()
    halves = recent_halves(histories, model.config.max_len)
    return 1.0 - overlap(_top_items(model, histories), _top_items(model, halves))


def margin_score(
    model: SequentialRecommender, histories: Sequences, rng: np.random.Generator
) -> np.ndarray:
    model.eval()
    values, _ = _top(model, histories, TOP + 1)
    gap = (values[:, TOP - 1] - values[:, TOP]).nan_to_num(posinf=0.0, neginf=0.0)
    return -gap.cpu().numpy()


def committee_score(
    model: SequentialRecommender, histories: Sequences, rng: np.random.Generator
) -> np.ndarray:
    torch.manual_seed(int(rng.integers(2**31)))
    model.train()  # dropout on: each pass is one member of the committee
    try:
        members = [_top_items(model, histories) for _ in range(COMMITTEE)]
    finally:
        model.eval()
    pairs = [overlap(a, b) for a, b in combinations(members, 2)]
    return 1.0 - np.mean(pairs, axis=0)


def random_score(
    model: SequentialRecommender, histories: Sequences, rng: np.random.Generator
) -> np.ndarray:
    return rng.random(histories.n_users)


SCORES: dict[
    Score, Callable[[SequentialRecommender, Sequences, np.random.Generator], np.ndarray]
] = {
    "views": views_score,
    "margin": margin_score,
    "committee": committee_score,
    "random": random_score,
}


def neighbour_score(
    model: SequentialRecommender, histories: Sequences, hints: np.ndarray
) -> np.ndarray:
    model.eval()
    return 1.0 - overlap(_top_items(model, histories), torch.as_tensor(hints[:, :TOP]))


def informativeness(
    score: Score,
    model: SequentialRecommender,
    histories: Sequences,
    rng: np.random.Generator,
    hints: np.ndarray | None = None,
) -> np.ndarray:
    """[n] how informative each history is under `score` (higher: pay for it first);
    `neighbour` needs `hints` (`candidates.dense_hints`)."""
    with torch.no_grad():
        if score == "neighbour":
            if hints is None:
                raise ValueError("the neighbour score needs the paid answers near each query")
            return neighbour_score(model, histories, hints)
        return SCORES[score](model, histories, rng)
