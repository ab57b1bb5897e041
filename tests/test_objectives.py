"""BAHSD objective pieces on small hand-computed cases, and which terms each objective uses."""

from __future__ import annotations

import math

import pytest
import torch

from distill.objectives import (
    ObjectiveConfig,
    _negative_validity,
    confidence_weight,
    distillation_loss,
    dynamic_kl,
    info_nce,
    rank_soft_targets,
    ranking_hinge,
    sample_negatives,
)

NO_NEGATIVES = (torch.zeros(1, 1), torch.zeros(1, 1, dtype=torch.bool))


def test_soft_targets_match_hand_computation_and_sum_to_one() -> None:
    valid = torch.tensor([[True, True, True, False], [False, False, False, False]])
    q = rank_soft_targets(valid, torch.tensor([1.0, 2.0]))
    z = 1 + math.exp(-1) + math.exp(-2)
    expected = [1 / z, math.exp(-1) / z, math.exp(-2) / z, 0.0]
    torch.testing.assert_close(q[0], torch.tensor(expected))
    torch.testing.assert_close(q.sum(1), torch.tensor([1.0, 0.0]))
    flatter = rank_soft_targets(valid[:1], torch.tensor([4.0]))
    assert flatter[0, 0] < q[0, 0]  # a higher temperature softens the targets


def test_dynamic_kl_is_zero_when_the_student_matches_the_targets() -> None:
    tau = torch.tensor([2.0])
    valid = torch.tensor([[True, True, True]])
    scores = tau * rank_soft_targets(valid, tau).log() + 3.0  # softmax(scores / tau) == q
    assert dynamic_kl(scores, valid, *NO_NEGATIVES, tau).abs().item() < 1e-6
    very_low = (torch.full((1, 2), -1e4), torch.ones(1, 2, dtype=torch.bool))
    assert dynamic_kl(scores, valid, *very_low, tau).abs().item() < 1e-6
    reversed_scores = scores.flip(1)
    assert dynamic_kl(reversed_scores, valid, *NO_NEGATIVES, tau).item() > 1e-3


def test_dynamic_kl_tau_squared_by_hand() -> None:
    tau = 2.0
    q1 = 1 / (1 + math.exp(-1 / tau))
    q = [q1, 1 - q1]
    expected = tau**2 * sum(qi * math.log(qi / 0.5) for qi in q)  # student uniform over 2
    got = dynamic_kl(
        torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool), *NO_NEGATIVES, torch.tensor([tau])
    )
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # A valid negative with score 0 makes the student uniform over 3 candidates.
    with_negative = dynamic_kl(
        torch.zeros(1, 2),
        torch.ones(1, 2, dtype=torch.bool),
        torch.zeros(1, 1),
        torch.ones(1, 1, dtype=torch.bool),
        torch.tensor([tau]),
    )
    expected3 = tau**2 * sum(qi * math.log(qi * 3) for qi in q)
    assert with_negative.item() == pytest.approx(expected3, rel=1e-5)


def test_hinge_zero_when_well_separated_and_hand_value_otherwise() -> None:
    config = ObjectiveConfig()
    valid = torch.ones(1, 3, dtype=torch.bool)
    separated = ranking_hinge(
        torch.tensor([[10.0, 9.0, 8.0]]),
        valid,
        torch.tensor([[0.0, -1.0]]),
        torch.ones(1, 2, dtype=torch.bool),
        config,
    )
    assert separated.item() == 0.0
    topk, negative = torch.tensor([[1.0, 0.8, 0.0]]), torch.tensor([[0.7, 50.0]])
    negative_valid = torch.tensor([[True, False]])  # the invalid one would dominate if counted
    # adjacent: relu(.5 - .2) = .3, relu(.5 - .8) = 0 -> .15; negatives: .2, .4, 1.2 -> .6
    got = ranking_hinge(topk, valid, negative, negative_valid, config)
    assert got.item() == pytest.approx(0.75)
    first_pair = ranking_hinge(topk, valid, negative, negative_valid, ObjectiveConfig(top_pairs=1))
    assert first_pair.item() == pytest.approx(0.3 + 0.6)
    short = ranking_hinge(
        topk, torch.tensor([[True, True, False]]), negative, negative_valid, config
    )
    assert short.item() == pytest.approx(0.3 + (0.2 + 0.4) / 2)


def test_info_nce_two_row_hand_value_and_invalid_rows() -> None:
    eye = torch.eye(2)
    got = info_nce(eye, eye, torch.tensor([True, True]), 0.2)
    torch.testing.assert_close(got, torch.full((2,), math.log(1 + math.exp(-5))))
    # A third, invalid row that would be a hard negative changes nothing and scores 0.
    full = torch.cat([eye, eye[:1]])
    got3 = info_nce(full, full, torch.tensor([True, True, False]), 0.2)
    torch.testing.assert_close(got3, torch.tensor([math.log(1 + math.exp(-5))] * 2 + [0.0]))


def test_info_nce_lower_for_aligned_pairs_than_shuffled() -> None:
    generator = torch.Generator().manual_seed(0)
    full = torch.randn(8, 16, generator=generator)
    view = full + 0.1 * torch.randn(8, 16, generator=generator)
    valid = torch.ones(8, dtype=torch.bool)
    aligned = info_nce(full, view, valid, 0.2).mean()
    shuffled = info_nce(full, view.roll(1, dims=0), valid, 0.2).mean()
    assert aligned < shuffled


def test_confidence_weight_sigmoid_and_hard_split() -> None:
    c = torch.tensor([0.5, 0.6, 0.4])
    soft = confidence_weight(c, ObjectiveConfig(delta=0.5))
    torch.testing.assert_close(soft, torch.sigmoid(torch.tensor([0.0, 1.0, -1.0])))
    median = confidence_weight(c, ObjectiveConfig())  # delta = batch median = 0.5
    torch.testing.assert_close(median, soft)
    hard = confidence_weight(c, ObjectiveConfig(delta=0.5, hard_split=True))
    torch.testing.assert_close(hard, torch.tensor([0.0, 1.0, 0.0]))


def test_sample_negatives_from_pool_and_reproducible() -> None:
    pool = torch.tensor([3, 7, 11])
    first = sample_negatives(pool, 4, 50, torch.Generator().manual_seed(1))
    again = sample_negatives(pool, 4, 50, torch.Generator().manual_seed(1))
    assert first.shape == (4, 50)
    assert set(first.unique().tolist()) <= {3, 7, 11}
    torch.testing.assert_close(first, again)


@pytest.mark.parametrize("sampled", [True, False])
@pytest.mark.parametrize("with_exclude", [True, False])
def test_a_negative_is_valid_when_real_allowed_and_first_of_its_id(
    sampled: bool, with_exclude: bool
) -> None:
    """Against a per-row reference, on ids drawn from a small catalogue so that collisions with
    the top-k, the excluded history, padding and earlier negatives all happen."""
    generator = torch.Generator().manual_seed(3)
    rows, items = 16, 12
    topk = torch.randint(0, items + 1, (rows, 5), generator=generator)
    exclude = torch.randint(0, items + 1, (rows, 7), generator=generator) if with_exclude else None
    if sampled:
        negatives = torch.randint(0, items + 1, (rows, 9), generator=generator)
    else:
        negatives = torch.arange(1, items + 1).unsqueeze(0).expand(rows, -1)
    got = _negative_validity(negatives, topk, exclude, sampled)
    for r in range(rows):
        forbidden = {0, *topk[r].tolist(), *([] if exclude is None else exclude[r].tolist())}
        seen: set[int] = set()
        expected = []
        for item in negatives[r].tolist():
            expected.append(item not in forbidden and not (sampled and item in seen))
            seen.add(item)
        assert got[r].tolist() == expected
    assert got.any() and not got.all()  # the draw has both kinds


N_ITEMS, B, K, D = 30, 4, 5, 8


def batch(seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(B, N_ITEMS + 1, generator=generator)
    scores[:, 0] = -math.inf
    scores[:, N_ITEMS] = -math.inf  # an item the student may not predict
    topk = torch.stack([torch.randperm(N_ITEMS - 1, generator=generator)[:K] + 1 for _ in range(B)])
    topk[1, 3:] = 0  # a short answer
    topk[3] = 0  # no answer at all: the row does not count
    return {
        "scores": scores.requires_grad_(),
        "topk": topk,
        "reliability": torch.tensor([0.9, 0.2, 0.6, 0.5]),
        "full_repr": torch.randn(B, D, generator=generator).requires_grad_(),
        "view_repr": torch.randn(B, D, generator=generator).requires_grad_(),
        "view_valid": torch.tensor([True, True, False, True]),
        "negative_pool": torch.arange(1, N_ITEMS + 1),
        "exclude": torch.tensor([[1, 2, 0], [3, 0, 0], [0, 0, 0], [4, 5, 6]]),
    }


def loss_of(name: str, seed: int = 0, **changes) -> tuple[torch.Tensor, dict[str, float]]:
    inputs = batch() | changes
    return distillation_loss(
        ObjectiveConfig(name=name, n_negatives=20),
        **inputs,
        generator=torch.Generator().manual_seed(seed),
    )


NAMES = ["bahsd", "dfme", "kl", "bahsd_noprobe", "bahsd_kl_only", "bahsd_low_only"]


@pytest.mark.parametrize("name", NAMES)
def test_gradients_flow_and_are_finite(name: str) -> None:
    inputs = batch()
    loss, parts = distillation_loss(
        ObjectiveConfig(name=name, n_negatives=20),
        **inputs,
        generator=torch.Generator().manual_seed(0),
    )
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert set(parts) == {"kl", "rank", "nce", "weight"}
    assert torch.isfinite(inputs["scores"].grad).all()
    assert inputs["scores"].grad.abs().sum() > 0
    assert inputs["scores"].grad[3].abs().sum() == 0  # the row without an answer
    uses_nce = name in {"bahsd", "bahsd_noprobe", "bahsd_low_only"}
    for key in ("full_repr", "view_repr"):
        grad = inputs[key].grad
        if uses_nce:
            assert torch.isfinite(grad).all() and grad.abs().sum() > 0
        else:
            assert grad is None


# Which inputs each objective's loss depends on: (reliability, representations).
DEPENDS = {
    "bahsd": (True, True),
    "dfme": (False, False),
    "kl": (False, False),
    "bahsd_noprobe": (False, True),
    "bahsd_kl_only": (True, False),
    "bahsd_low_only": (False, True),
}


@pytest.mark.parametrize("name", NAMES)
def test_each_objective_uses_exactly_its_terms(name: str) -> None:
    base, parts = loss_of(name)
    other_c, _ = loss_of(name, reliability=torch.tensor([0.1, 0.95, 0.3, 0.7]))
    other_repr, _ = loss_of(name, view_repr=torch.randn(B, D))
    uses_c, uses_repr = DEPENDS[name]
    assert (other_c.item() != pytest.approx(base.item())) == uses_c
    assert (other_repr.item() != pytest.approx(base.item())) == uses_repr
    assert (parts["kl"] > 0) == (name in {"bahsd", "kl", "bahsd_noprobe", "bahsd_kl_only"})
    assert (parts["rank"] > 0) == (name in {"bahsd", "dfme", "bahsd_noprobe", "bahsd_low_only"})
    assert (parts["nce"] > 0) == uses_repr


@pytest.mark.parametrize("kl_weight", [1.0, 0.25])
def test_bahsd_combines_the_branches_as_specified(kl_weight: float) -> None:
    """With a hard split, the loss is the row-mean of kl_weight * KL or rank + alpha NCE."""
    inputs = batch()
    seed = torch.Generator().manual_seed(0)
    config = ObjectiveConfig(delta=0.55, hard_split=True, n_negatives=20, kl_weight=kl_weight)
    loss, _ = distillation_loss(config, **inputs, generator=seed)
    high, _ = distillation_loss(
        ObjectiveConfig(name="bahsd_kl_only", n_negatives=20),
        **inputs,
        generator=torch.Generator().manual_seed(0),
        example_weight=torch.tensor([1.0, 0.0, 1.0, 0.0]),
    )
    low, _ = distillation_loss(
        ObjectiveConfig(name="bahsd_low_only", n_negatives=20),
        **inputs,
        generator=torch.Generator().manual_seed(0),
        example_weight=torch.tensor([0.0, 1.0, 0.0, 0.0]),
    )
    # Rows 0, 2 (c 0.9, 0.6) are high, row 1 (0.2) low, row 3 has no answer: 3 rows count.
    assert loss.item() == pytest.approx((2 * kl_weight * high.item() + low.item()) / 3, rel=1e-5)


def test_negatives_colliding_with_topk_or_exclude_are_ignored() -> None:
    topk = torch.tensor([[1, 2, 0]])
    scores = torch.zeros(1, 6)
    scores[0, 1], scores[0, 2] = 2.0, 1.0  # top-k well separated by 1 >= margin 0.5
    scores[0, 3] = 10.0  # excluded: would cost a large hinge if it counted as a negative
    common = {
        "scores": scores,
        "topk": topk,
        "reliability": torch.tensor([0.5]),
        "full_repr": torch.ones(1, 2),
        "view_repr": torch.ones(1, 2),
        "view_valid": torch.tensor([False]),
        "exclude": torch.tensor([[3, 0]]),
    }
    config = ObjectiveConfig(name="dfme", n_negatives=10)
    colliding, _ = distillation_loss(config, **common, negative_pool=torch.tensor([1, 2, 3]))
    assert colliding.item() == 0.0
    # Item 4 is a real negative, scored between the two top-k items.
    scores[0, 4] = 1.8
    real, _ = distillation_loss(config, **common, negative_pool=torch.tensor([1, 3, 4]))
    # hinge over negatives: relu(.5 - (2 - 1.8)) = .3, relu(.5 - (1 - 1.8)) = 1.3 -> mean .8
    assert real.item() == pytest.approx(0.8)


def test_every_pool_item_is_a_negative_when_none_are_sampled() -> None:
    # Pool items 1..5; top-k {1, 2}; 3 excluded; so 4 and 5 are the negatives, each once.
    scores = torch.tensor([[float("-inf"), 2.0, 1.0, 10.0, 1.8, -5.0]])
    common = {
        "scores": scores,
        "topk": torch.tensor([[1, 2]]),
        "reliability": torch.tensor([0.5]),
        "full_repr": torch.ones(1, 2),
        "view_repr": torch.ones(1, 2),
        "view_valid": torch.tensor([False]),
        "exclude": torch.tensor([[3]]),
        "negative_pool": torch.arange(1, 6),
    }
    loss, _ = distillation_loss(ObjectiveConfig(name="dfme", n_negatives=None), **common)
    # adjacent pair: relu(.5 - 1) = 0; versus 4: .3 and 1.3, versus 5: 0 and 0 -> mean .4
    assert loss.item() == pytest.approx(0.4)


def test_example_weight_and_empty_batch() -> None:
    inputs = batch()
    config = ObjectiveConfig(name="dfme", n_negatives=20)
    only_first, _ = distillation_loss(
        config,
        **inputs,
        generator=torch.Generator().manual_seed(0),
        example_weight=torch.tensor([1.0, 0.0, 0.0, 0.0]),
    )
    row0 = {key: value[:1] for key, value in batch().items() if key != "negative_pool"}
    alone, _ = distillation_loss(
        config,
        **row0,
        negative_pool=inputs["negative_pool"],
        generator=torch.Generator().manual_seed(0),
    )
    assert only_first.item() == pytest.approx(alone.item())
    empty = inputs | {"topk": torch.zeros(B, K, dtype=torch.long)}
    loss, _ = distillation_loss(ObjectiveConfig(), **empty)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(empty["scores"].grad).all()
