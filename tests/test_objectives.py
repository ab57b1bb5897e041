"""BAHSD objective pieces on small hand-computed cases, and which terms each objective uses."""

from __future__ import annotations

import math

import pytest
import torch

from distill.objectives import (
    ObjectiveConfig,
    _combine,
    _negative_validity,
    confidence_weight,
    distillation_loss,
    dynamic_kl,
    info_nce,
    outside_logsumexp,
    plackett_luce,
    position_weights,
    rank_soft_targets,
    ranking_hinge,
    sample_negatives,
    sampled_logsumexp,
    score_distillation,
    standardised_scores,
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


def test_outside_logsumexp_leaves_out_answer_history_padding_and_infinite_scores() -> None:
    scores = torch.tensor([[5.0, 1.0, 2.0, 0.5, float("-inf"), 0.0]])
    # answer {1}, history {2}, column 0 and item 4 (-inf) are out: items 3 and 5 remain
    got = outside_logsumexp(scores, torch.tensor([[1]]), torch.tensor([[2]]), torch.ones(1))
    assert got.item() == pytest.approx(math.log(math.exp(0.5) + 1))
    at_two = outside_logsumexp(
        scores, torch.tensor([[1]]), torch.tensor([[2]]), torch.tensor([2.0])
    )
    assert at_two.item() == pytest.approx(math.log(math.exp(0.25) + 1))


def test_plackett_luce_hand_value_with_slot_weights_and_temperature() -> None:
    z, outside = torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([0.0])  # one outside item at 0
    valid = torch.tensor([[True, True, False]])  # the third slot is empty
    nll1 = math.log(math.exp(2) + math.exp(1) + 1) - 2
    nll2 = math.log(math.exp(1) + 1) - 1
    got = plackett_luce(z, valid, outside, torch.tensor([1.0, 0.5, 1.0]), torch.ones(1))
    assert got.item() == pytest.approx((nll1 + 0.5 * nll2) / 1.5, rel=1e-6)
    # tau = 2 halves every score, outside items included (the caller's outside_lse is at tau)
    half = plackett_luce(z / 2, valid, outside, torch.ones(3), torch.ones(1))
    at_two = plackett_luce(z, valid, outside, torch.ones(3), torch.tensor([2.0]))
    assert at_two.item() == pytest.approx(half.item(), rel=1e-6)


def test_plackett_luce_is_lowest_in_the_teachers_order_and_falls_with_the_margins() -> None:
    import itertools

    valid, outside, ones = torch.ones(1, 4, dtype=torch.bool), torch.tensor([-1.0]), torch.ones(1)
    weights = position_weights(4, 2, 0.3, torch.device("cpu"))
    ordered = torch.tensor([3.0, 2.0, 1.0, 0.0])
    best = plackett_luce(ordered.unsqueeze(0), valid, outside, weights, ones).item()
    for permutation in itertools.permutations(range(4)):
        if list(permutation) != [0, 1, 2, 3]:
            other = plackett_luce(
                ordered[list(permutation)].unsqueeze(0), valid, outside, weights, ones
            )
            assert other.item() > best
    wider = plackett_luce(4 * ordered.unsqueeze(0), valid, outside - 20, weights, ones).item()
    assert 0 < wider < best and wider < 0.05


def test_sampled_outside_set_is_the_valid_negatives_only() -> None:
    got = sampled_logsumexp(
        torch.tensor([[0.0, 1.0, 5.0]]), torch.tensor([[True, True, False]]), torch.ones(1)
    )
    assert got.item() == pytest.approx(math.log(1 + math.e))
    # In the loss: an item outside both the answer and the sampled pool counts only for the
    # whole-catalogue outside set.
    common = {
        "topk": torch.tensor([[1, 2]]),
        "reliability": torch.tensor([0.5]),
        "full_repr": torch.ones(1, 2),
        "view_repr": torch.ones(1, 2),
        "view_valid": torch.tensor([False]),
        "negative_pool": torch.tensor([3]),
    }
    low, high = (
        torch.tensor([[0.0, 2.0, 1.0, 0.0, -9.0]]),
        torch.tensor([[0.0, 2.0, 1.0, 0.0, 9.0]]),
    )
    for outside, changes in (("sampled", False), ("catalogue", True)):
        config = ObjectiveConfig(name="listwise", list_outside=outside, n_negatives=4)
        first, _ = distillation_loss(config, low, **common)
        second, _ = distillation_loss(config, high, **common)
        assert (first.item() != pytest.approx(second.item())) == changes


def test_position_weights_focus_on_the_top() -> None:
    got = position_weights(5, 2, 0.25, torch.device("cpu"))
    assert got.tolist() == [1.0, 1.0, 0.25, 0.25, 0.25]


def test_listwise_gradients_reach_the_answer_and_the_outside_items_only() -> None:
    scores = torch.zeros(1, 6, requires_grad=True)
    config = ObjectiveConfig(name="listwise")
    loss, parts = distillation_loss(
        config,
        scores,
        topk=torch.tensor([[2, 4]]),
        reliability=torch.tensor([0.5]),
        full_repr=torch.ones(1, 2),
        view_repr=torch.ones(1, 2),
        view_valid=torch.tensor([False]),
        negative_pool=torch.arange(1, 6),
        exclude=torch.tensor([[1]]),
    )
    loss.backward()
    grad = scores.grad[0]
    assert grad[2] < 0 and grad[4] < 0  # answer items are pushed up
    assert grad[3] > 0 and grad[5] > 0  # outside items pushed down
    assert grad[0] == 0 and grad[1] == 0  # padding and the history take no part
    assert parts["list"] == pytest.approx(loss.item())


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


NAMES = ["bahsd", "bahsd_noprobe", "listwise", "dfme", "kl", "bahsd_gated"]
PARTS = {"kl", "rank", "nce", "list", "weight", "score"}


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
    assert set(parts) == PARTS
    assert torch.isfinite(inputs["scores"].grad).all()
    assert inputs["scores"].grad.abs().sum() > 0
    assert inputs["scores"].grad[3].abs().sum() == 0  # the row without an answer
    for key in ("full_repr", "view_repr"):
        grad = inputs[key].grad
        if "nce" in ObjectiveConfig(name=name).terms:
            assert torch.isfinite(grad).all() and grad.abs().sum() > 0
        else:
            assert grad is None


# Whether each objective's loss depends on reliability.
USES_RELIABILITY = {"bahsd": True, "bahsd_gated": True}


@pytest.mark.parametrize("name", NAMES)
def test_each_objective_uses_exactly_its_terms(name: str) -> None:
    base, parts = loss_of(name)
    other_c, _ = loss_of(name, reliability=torch.tensor([0.1, 0.95, 0.3, 0.7]))
    other_repr, _ = loss_of(name, view_repr=torch.randn(B, D))
    terms = ObjectiveConfig(name=name).terms
    assert (other_c.item() != pytest.approx(base.item())) == USES_RELIABILITY.get(name, False)
    assert (other_repr.item() != pytest.approx(base.item())) == ("nce" in terms)
    for part in ("kl", "rank", "nce", "list"):
        assert (parts[part] > 0) == (part in terms)


def test_objectives_combine_their_terms_as_documented() -> None:
    """Per-row combination of given term values, by hand for each objective."""
    weight = torch.tensor([1.0, 0.0, 0.5])
    kl, rank = torch.tensor([4.0, 5.0, 6.0]), torch.tensor([1.0, 2.0, 3.0])
    nce, listwise = torch.tensor([10.0, 20.0, 30.0]), torch.tensor([7.0, 8.0, 9.0])

    def combined(**config) -> list[float]:
        return _combine(ObjectiveConfig(**config), weight, kl, rank, nce, listwise).tolist()

    # bahsd: (1 + s(2w - 1)) list + hinge_weight (1 - s(2w - 1)) rank + alpha nce, s = 0.5
    assert combined(name="bahsd", hinge_weight=2.0) == pytest.approx(
        [1.5 * 7 + 2 * 0.5 * 1 + 1.0, 0.5 * 8 + 2 * 1.5 * 2 + 2.0, 9 + 2 * 3 + 3.0]
    )
    assert combined(name="bahsd", reliability_spread=0.0) == pytest.approx(
        [7 + 1 + 1.0, 8 + 2 + 2.0, 9 + 3 + 3.0]
    )
    # bahsd_gated: w kl_weight KL + (1 - w)(rank + alpha NCE)
    assert combined(name="bahsd_gated", kl_weight=0.25) == pytest.approx(
        [0.25 * 4, 2 + 2.0, 0.5 * 0.25 * 6 + 0.5 * (3 + 3.0)]
    )
    assert combined(name="dfme") == pytest.approx([1.0, 2.0, 3.0])
    assert combined(name="listwise") == pytest.approx([7.0, 8.0, 9.0])


def test_bahsd_noprobe_ignores_reliability_and_tilts_nothing() -> None:
    """bahsd_noprobe equals bahsd with the tilt off and every temperature at c = 0.5."""
    inputs = batch()
    loss, parts = distillation_loss(
        ObjectiveConfig(name="bahsd_noprobe", n_negatives=20),
        **inputs,
        generator=torch.Generator().manual_seed(0),
    )
    flat = ObjectiveConfig(name="bahsd", n_negatives=20, reliability_spread=0.0)
    same, _ = distillation_loss(
        flat,
        **(inputs | {"reliability": torch.full((B,), 0.5)}),
        generator=torch.Generator().manual_seed(0),
    )
    assert loss.item() == pytest.approx(same.item()) and parts["weight"] == pytest.approx(0.5)


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


# --- the score-aware term --------------------------------------------------------------------

SCORED = torch.tensor([[90.0, 80.0, 79.0, 0.0], [3.0, 2.5, 1.0, -4.0], [7.0, 1.0, 0.0, 0.0]])
SCORED_VALID = torch.tensor(
    [[True, True, True, False], [True, True, True, True], [True, True, False, False]]
)
ALL_SCORED = torch.ones(3, dtype=torch.bool)


def test_standardised_scores_put_the_best_at_zero_in_units_of_the_rows_spread() -> None:
    scores = torch.tensor([[5.0, 3.0, 99.0], [2.0, 2.0, 2.0]])
    valid = torch.tensor([[True, True, False], [True, True, True]])
    # Row 0: max 5, population std of (5, 3) is 1; row 1: no spread, so nothing to divide by.
    expected = torch.tensor([[0.0, -2.0, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(standardised_scores(scores, valid), expected)


def test_score_distillation_hand_value_at_two_temperatures() -> None:
    """Teacher (5, 3) standardises to (0, -2); a student scoring both alike is uniform."""
    teacher, valid = torch.tensor([[5.0, 3.0]]), torch.ones(1, 2, dtype=torch.bool)
    for temperature in (1.0, 2.0):
        q1 = 1 / (1 + math.exp(-2 / temperature))
        expected = sum(q * math.log(q / 0.5) for q in (q1, 1 - q1))
        got = score_distillation(torch.zeros(1, 2), teacher, valid, ALL_SCORED[:1], temperature)
        assert got.item() == pytest.approx(expected, rel=1e-5)


def test_score_distillation_is_zero_at_the_teachers_gaps_and_positive_elsewhere() -> None:
    target = standardised_scores(SCORED, SCORED_VALID)
    for temperature in (0.5, 1.0, 3.0):
        for student in (target + 7.0, 2 * target, 0.1 * target - 3):  # shifts, scales are free
            matched = score_distillation(student, SCORED, SCORED_VALID, ALL_SCORED, temperature)
            assert matched.item() == pytest.approx(0.0, abs=1e-5)
    # Same order as the teacher but other gaps: ranks alone could not tell it apart.
    same_order = torch.tensor([[0.0, -1.0, -2.0, 0.0], [0.0, -1.0, -2.0, -3.0], [0.0, -1.0, 0, 0]])
    assert score_distillation(same_order, SCORED, SCORED_VALID, ALL_SCORED, 1.0).item() > 0.01


def test_score_distillation_ignores_the_scale_and_offset_of_each_rows_scores() -> None:
    student = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    base = score_distillation(student, SCORED, SCORED_VALID, ALL_SCORED, 1.5)
    # Each row its own API scale: logits, a 0..1 probability-like range, shifted by -1000.
    rescaled = SCORED * torch.tensor([[0.01], [40.0], [1.0]]) + torch.tensor([[0.0], [3], [-1e3]])
    other = score_distillation(student, rescaled, SCORED_VALID, ALL_SCORED, 1.5)
    assert other.item() == pytest.approx(base.item(), rel=1e-4)


def test_score_distillation_averages_the_rows_with_scores_and_ignores_the_rest() -> None:
    student = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    has = torch.tensor([True, False, True])
    loss = score_distillation(student, SCORED, SCORED_VALID, has, 1.0)
    # A row without scores and padded slots (student or teacher) change nothing...
    changed_student, changed_teacher = student.clone(), SCORED.clone()
    changed_student[1], changed_teacher[1] = 50.0, torch.tensor([1.0, 9.0, -3.0, 4.0])
    changed_student[0, 3], changed_student[2, 2:] = 1e4, -math.inf
    changed_teacher[0, 3], changed_teacher[2, 2:] = math.nan, 1e9
    again = score_distillation(changed_student, changed_teacher, SCORED_VALID, has, 1.0)
    assert again.item() == pytest.approx(loss.item())
    # ... and the mean is over the rows with scores, not diluted by the others.
    rows = [
        score_distillation(
            student[i : i + 1], SCORED[i : i + 1], SCORED_VALID[i : i + 1], has[i : i + 1], 1.0
        ).item()
        for i in (0, 2)
    ]
    assert loss.item() == pytest.approx(sum(rows) / 2)
    # A row with one valid item says nothing, and no row with scores gives 0.
    one = SCORED_VALID.clone()
    one[0, 1:] = False
    assert score_distillation(student, SCORED, one, has, 1.0).item() == pytest.approx(rows[1])
    none = score_distillation(student, SCORED, SCORED_VALID, torch.zeros(3, dtype=torch.bool), 1.0)
    assert none.item() == 0.0


def test_score_distillation_gradient_reaches_the_valid_slots_of_rows_with_scores() -> None:
    student = torch.zeros(3, 4, requires_grad=True)
    has = torch.tensor([True, False, True])
    score_distillation(student, SCORED, SCORED_VALID, has, 1.0).backward()
    grad = student.grad
    assert torch.isfinite(grad).all()
    assert (grad[SCORED_VALID & has.unsqueeze(1)] != 0).all()
    assert (grad[~(SCORED_VALID & has.unsqueeze(1))] == 0).all()
    assert grad[0, 0] < 0  # gradient descent raises the teacher's clear winner
    none = torch.zeros(3, 4, requires_grad=True)
    score_distillation(none, SCORED, SCORED_VALID, torch.zeros(3, dtype=torch.bool), 1.0).backward()
    assert (none.grad == 0).all()


def scored_batch() -> dict:
    inputs = batch()
    generator = torch.Generator().manual_seed(5)
    teacher = torch.randn(B, K, generator=generator).sort(dim=1, descending=True).values * 30
    return inputs | {
        "teacher_scores": teacher,
        "has_scores": torch.tensor([True, True, False, True]),
    }


@pytest.mark.parametrize("name", NAMES)
def test_the_score_term_is_added_to_every_objective_with_its_weight(name: str) -> None:
    inputs = scored_batch()
    plain, plain_parts = loss_of(name, **inputs)
    assert plain_parts["score"] == 0.0  # score_weight 0: ranks alone, scores unused
    config = ObjectiveConfig(name=name, n_negatives=20, score_weight=0.5, score_temperature=2.0)
    loss, parts = distillation_loss(config, **inputs, generator=torch.Generator().manual_seed(0))
    topk_scores = inputs["scores"].gather(1, inputs["topk"])
    valid = (inputs["topk"] != 0) & torch.isfinite(topk_scores)
    term = score_distillation(
        torch.where(valid, topk_scores, 0),
        inputs["teacher_scores"],
        valid,
        inputs["has_scores"],
        2.0,
    )
    assert term.item() > 0 and parts["score"] == pytest.approx(term.item())
    assert loss.item() == pytest.approx(plain.item() + 0.5 * term.item())
    assert {k: v for k, v in parts.items() if k != "score"} == pytest.approx(
        {k: v for k, v in plain_parts.items() if k != "score"}
    )


def test_a_score_weight_without_scores_is_refused() -> None:
    with pytest.raises(ValueError, match="needs the teacher's scores"):
        distillation_loss(ObjectiveConfig(name="dfme", score_weight=1.0), **batch())


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"score_weight": -0.1}, "score_weight must be finite and at least 0"),
        ({"score_weight": math.nan}, "score_weight must be finite"),
        ({"score_temperature": 0.0}, "score_temperature must be finite and above 0"),
    ],
)
def test_score_settings_are_checked(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ObjectiveConfig(**changes)
