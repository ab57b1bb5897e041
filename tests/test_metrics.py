"""Metrics against rankings computed by hand."""

import math

import numpy as np
import pytest
import torch

from seqrec.metrics import agreement_at_k, ranking_metrics, sampled_ranks, target_ranks


def test_target_ranks() -> None:
    scores = torch.tensor([[0.0, 0.9, 0.1, 0.5, 0.3], [0.0, 0.1, 0.2, 0.3, 0.4]])
    assert target_ranks(scores, torch.tensor([3, 1])).tolist() == [1, 3]


def test_ranking_metrics_by_hand() -> None:
    ranks = np.array([0, 1, 4, 12])
    m = ranking_metrics(ranks, ks=(1, 5, 10))
    assert m["HR@1"] == pytest.approx(0.25)
    assert m["HR@5"] == pytest.approx(0.75)
    assert m["HR@10"] == pytest.approx(0.75)
    assert m["NDCG@1"] == pytest.approx(0.25)
    expected_ndcg5 = (1 + 1 / math.log2(3) + 1 / math.log2(6)) / 4
    assert m["NDCG@5"] == pytest.approx(expected_ndcg5)
    assert m["NDCG@10"] == pytest.approx(expected_ndcg5)


def test_sampled_ranks_avoid_history_and_target() -> None:
    n_items = 50
    scores = torch.arange(n_items + 1, dtype=torch.float).repeat(2, 1)
    targets = torch.tensor([10, 40])
    excluded = torch.zeros(2, n_items + 1, dtype=torch.bool)
    excluded[:, 0] = True
    excluded[0, 11:] = True  # row 0 has seen every item above the target: no negative beats it
    ranks = sampled_ranks(scores, targets, excluded, 100, torch.Generator().manual_seed(0))
    assert ranks[0] == 0
    # Row 1: 10 of the 49 candidate items beat item 40, so about 20% of 100 draws do.
    assert 5 <= ranks[1] <= 40


def test_agreement_at_k() -> None:
    a = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    b = np.array([[4, 3, 9, 1], [9, 10, 11, 12]])
    assert agreement_at_k(a, b, 4).tolist() == [0.75, 0.0]
    assert agreement_at_k(a, b, 1).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError):
        agreement_at_k(a, b, 5)


def test_empty_slots_never_count_as_agreement() -> None:
    # Lists cut short (0 = no item) agree on the items both name, out of the longer list.
    a = np.array([[3, 0, 0, 0], [3, 5, 0, 0], [0, 0, 0, 0]])
    b = np.array([[3, 5, 0, 0], [5, 3, 0, 0], [0, 0, 0, 0]])
    assert agreement_at_k(a, b, 4).tolist() == [0.5, 1.0, 1.0]


def test_sampled_ranks_when_every_other_item_was_seen() -> None:
    scores = torch.rand(1, 6)
    excluded = torch.ones(1, 6, dtype=torch.bool)
    ranks = sampled_ranks(scores, torch.tensor([3]), excluded, 100, torch.Generator())
    assert ranks.tolist() == [0]
