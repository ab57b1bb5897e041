"""Log-domain Sinkhorn: marginals, positivity, a sensible distance, finite gradients."""

import pytest
import torch

from seqrec.longtail.sinkhorn import cosine_cost, sinkhorn_distance, sinkhorn_plan


@pytest.mark.parametrize(("rows", "cols"), [(8, 8), (5, 12)])
def test_plan_has_uniform_marginals(rows: int, cols: int) -> None:
    torch.manual_seed(0)
    cost = cosine_cost(torch.randn(rows, 16), torch.randn(cols, 16))
    plan = sinkhorn_plan(cost, epsilon=0.1, n_iters=200)
    assert (plan >= 0).all()
    torch.testing.assert_close(plan.sum(1), torch.full((rows,), 1 / rows), atol=1e-4, rtol=0)
    torch.testing.assert_close(plan.sum(0), torch.full((cols,), 1 / cols), atol=1e-4, rtol=0)


def test_small_epsilon_stays_finite() -> None:
    torch.manual_seed(0)
    cost = cosine_cost(torch.randn(6, 8), torch.randn(6, 8))
    plan = sinkhorn_plan(cost, epsilon=1e-3, n_iters=100)
    assert torch.isfinite(plan).all()


def test_distance_to_itself_is_smaller_than_to_unrelated() -> None:
    torch.manual_seed(0)
    x = torch.randn(32, 16)
    y = torch.randn(32, 16)
    same = sinkhorn_distance(x, x[torch.randperm(32)])  # a permutation is the same set
    other = sinkhorn_distance(x, y)
    assert same < 0.1 < other


def test_gradients_flow_and_are_finite() -> None:
    torch.manual_seed(0)
    x = torch.randn(10, 8, requires_grad=True)
    y = torch.randn(7, 8, requires_grad=True)
    sinkhorn_distance(x, y, epsilon=0.05).backward()
    for tensor in (x, y):
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all()
        assert tensor.grad.abs().sum() > 0


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="B2, d"):
        sinkhorn_distance(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="epsilon"):
        sinkhorn_plan(torch.zeros(2, 2), epsilon=0.0)
