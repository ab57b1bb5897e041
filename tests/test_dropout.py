"""The CPU dropout: drop rate, unbiased scaling, seeded determinism, and where it steps aside."""

import pytest
import torch

from seqrec.models.dropout import Dropout, attention, dropout


def test_drops_the_requested_share_and_keeps_the_mean() -> None:
    torch.manual_seed(0)
    x = torch.ones(200_000)
    out = dropout(x, 0.2, training=True)
    dropped = (out == 0).float().mean().item()
    assert abs(dropped - 51 / 256) < 0.005  # p quantised to 1/256
    assert abs(out.mean().item() - 1.0) < 0.01
    assert torch.unique(out).tolist() == pytest.approx([0.0, 256 / 205])


def test_same_seed_same_mask_and_gradients_follow_the_mask() -> None:
    x = torch.randn(4, 50, 16, requires_grad=True)
    torch.manual_seed(3)
    first = dropout(x, 0.3, training=True)
    torch.manual_seed(3)
    second = dropout(x, 0.3, training=True)
    torch.testing.assert_close(first, second)
    first.sum().backward()
    assert torch.equal(x.grad == 0, first == 0)


def test_mask_is_the_random_bytes_against_the_threshold_in_the_input_dtype() -> None:
    """The drawn words decide the mask byte by byte, so seeded training stays reproducible
    across releases: an element is kept exactly when its byte is at least round(p * 256)."""
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        x = torch.ones(40, 10, 10, dtype=dtype)  # bytes equal to the threshold occur
        torch.manual_seed(11)
        out = dropout(x, 0.3, training=True)
        torch.manual_seed(11)
        words = torch.randint(-(2**63), 2**63 - 1, ((x.numel() + 7) // 8,), dtype=torch.int64)
        kept = words.view(torch.uint8)[: x.numel()].view(x.shape) >= round(0.3 * 256)
        assert out.dtype == dtype
        assert torch.equal(out != 0, kept)
        expected = torch.tensor(256 / (256 - 77), dtype=dtype)
        assert torch.equal(out[kept], expected.expand(int(kept.sum())))


def test_identity_when_not_training_or_p_is_zero() -> None:
    x = torch.randn(3, 7)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0, training=True) is x
    module = Dropout(0.5).eval()
    assert module(x) is x
    with pytest.raises(ValueError, match="dropout"):
        Dropout(1.0)


def test_attention_without_dropout_matches_the_fused_kernel() -> None:
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 5, 8) for _ in range(3))
    allowed = torch.ones(5, 5, dtype=torch.bool).tril().expand(2, 1, 5, 5)
    fused = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    torch.testing.assert_close(attention(q, k, v, allowed, 0.0), fused)
    # With dropout on the CPU the weights are explicit: the mean over many draws stays unbiased.
    draws = torch.stack([attention(q, k, v, allowed, 0.25) for _ in range(400)]).mean(0)
    torch.testing.assert_close(draws, fused, atol=0.15, rtol=0.0)


def test_attention_dropout_path_equals_masking_the_scores() -> None:
    """The CPU path adds 0 / -inf to the scores instead of `masked_fill`: the same weights,
    so the same output for the same dropout draws, with padded keys never attended."""
    torch.manual_seed(1)
    q, k, v = (torch.randn(3, 2, 6, 4) for _ in range(3))
    allowed = torch.rand(3, 1, 6, 6) > 0.4
    allowed |= torch.eye(6, dtype=torch.bool)  # every query keeps a key, as the models ensure
    torch.manual_seed(7)
    out = attention(q, k, v, allowed, 0.25)
    torch.manual_seed(7)
    scores = (q @ k.transpose(-2, -1)) * 4**-0.5
    weights = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
    assert torch.equal(out, dropout(weights, 0.25, training=True) @ v)
