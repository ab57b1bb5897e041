"""HPSERec: history filtering, expert items, padding, coupling gradients, training, artifacts."""

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from seqrec.artifacts import ArtifactInfo, load_artifact, save_artifact
from seqrec.models import ModelConfig, build_model
from seqrec.models.hpserec import HPSERec
from seqrec.models.sasrec import SASRec

N_ITEMS = 30


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models: one intra-op thread avoids spin-wait slowdowns on a shared 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(experts: int = 3, **overrides: object) -> HPSERec:
    torch.manual_seed(0)
    config = ModelConfig(
        n_items=N_ITEMS, hidden=16, n_heads=2, max_len=10, experts=experts, **overrides
    )
    model = build_model(config)
    assert isinstance(model, HPSERec)
    # Items 1..10 -> group 0 (tail), 11..20 -> 1, 21..30 -> 2 (head), capped at experts - 1.
    groups = np.minimum((np.arange(N_ITEMS + 1) - 1) // 10, experts - 1).clip(min=0)
    model.set_partition(groups)
    return model.eval()


def test_filter_keeps_order_and_only_allowed_items() -> None:
    model = tiny()
    rng = np.random.default_rng(0)
    seqs = torch.as_tensor(rng.integers(1, N_ITEMS + 1, size=(16, 10)))
    seqs[:4, :5] = 0
    allowed = model.expert_items()
    for expert in range(3):
        filtered = model.filter_history(seqs, expert)
        assert filtered.shape == seqs.shape
        for row, out in zip(seqs.tolist(), filtered.tolist(), strict=True):
            kept = [i for i in row if i and allowed[expert, i]]
            assert out == [0] * (len(row) - len(kept)) + kept
    torch.testing.assert_close(model.filter_history(seqs, 2), seqs)  # global expert: all items


def test_expert_items_are_cumulative_and_skip_padding() -> None:
    allowed = tiny().expert_items()
    assert allowed.shape == (3, N_ITEMS + 1) and not allowed[:, 0].any()
    assert allowed.sum(1).tolist() == [10, 20, 30]
    assert (allowed[:-1] <= allowed[1:]).all()


def test_padding_gives_same_global_logits() -> None:
    model = tiny()
    history = [3, 17, 5, 9, 25]
    unpadded = model.logits(torch.tensor([history]))
    padded = model.logits(torch.tensor([[0] * 5 + history, list(range(21, 31))]))
    assert not torch.isnan(padded).any()
    torch.testing.assert_close(padded[:1, 1:], unpadded[:, 1:], atol=1e-5, rtol=1e-5)
    outputs = model.expert_outputs(torch.tensor([[0] * 5 + history]))
    torch.testing.assert_close(outputs[-1].logits, unpadded)  # the last expert is the global one


def test_expert_never_scores_outside_its_items() -> None:
    model = tiny()
    seqs = torch.tensor([[0, 0, 3, 17, 25], [0, 0, 0, 22, 28], [11, 12, 1, 29, 30]])
    outputs = model.expert_outputs(seqs)
    allowed = model.expert_items()
    assert [o.valid.tolist() for o in outputs] == [
        [True, False, True],  # row 1 has no tail item
        [True, False, True],
        [True, True, True],
    ]
    for expert, out in enumerate(outputs):
        assert out.repr.shape == (3, 16) and out.logits.shape == (3, N_ITEMS + 1)
        assert torch.isinf(out.logits[:, ~allowed[expert]]).all()
        assert torch.isfinite(out.logits[:, allowed[expert]]).all()
    # Expert 0 sees only its filtered history: items it cannot see do not change its output.
    changed = seqs.clone()
    changed[0, 3] = 18  # a group-1 item swapped for another group-1 item
    torch.testing.assert_close(model.expert_outputs(changed)[0].logits[0], outputs[0].logits[0])


def test_coupling_gradients_follow_the_detached_sides() -> None:
    seqs = torch.tensor(
        [[0, 3, 17, 25, 4], [1, 2, 12, 22, 29], [5, 6, 7, 8, 30], [9, 11, 21, 2, 3]]
    )

    def grads(beta: float, lam: float) -> list[bool]:
        model = tiny(experts=2, experts_beta=beta, experts_lambda=lam, dropout=0.0)
        model.coupling_loss(model.expert_outputs(seqs)).backward()
        return [
            any(p.grad is not None and p.grad.abs().sum() > 0 for p in stack.parameters())
            for stack in model.experts
        ]

    assert grads(beta=0.0, lam=1.0) == [True, False]  # Sinkhorn feedback trains expert k only
    assert grads(beta=1.0, lam=0.0) == [False, True]  # feed-forward KL trains expert k+1 only
    assert grads(beta=1.0, lam=1.0) == [True, True]


def test_coupling_is_zero_without_shared_valid_rows() -> None:
    model = tiny()
    outputs = model.expert_outputs(torch.tensor([[0, 0, 21, 22, 23]]))  # head items only
    assert not outputs[0].valid.any()
    loss = model.coupling_loss(outputs)
    assert torch.isfinite(loss)


def test_training_loss_falls() -> None:
    model = tiny(dropout=0.0).train()
    rng = np.random.default_rng(0)
    # A learnable pattern across groups: each sequence counts upward from a random start.
    starts = rng.integers(1, 20, size=32)
    windows = torch.as_tensor(starts[:, None] + np.arange(11)[None, :])
    windows[:6, :4] = 0
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = model.training_loss(windows, None)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0]


def test_artifact_round_trip_restores_partition_and_logits(tmp_path: Path) -> None:
    model = tiny()
    seqs = torch.tensor([[0, 0, 3, 17, 25], [4, 8, 12, 16, 20]])
    info = ArtifactInfo(model=model.config, item_ids=[f"i{i}" for i in range(N_ITEMS)])
    save_artifact(tmp_path, model, info)
    loaded = load_artifact(tmp_path).model
    assert isinstance(loaded, HPSERec)
    torch.testing.assert_close(loaded.item_group, model.item_group)
    torch.testing.assert_close(loaded.logits(seqs), model.logits(seqs))
    for a, b in zip(loaded.expert_outputs(seqs), model.expert_outputs(seqs), strict=True):
        torch.testing.assert_close(a.logits, b.logits)


def test_old_config_without_expert_fields_loads_as_plain_backbone(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_items=N_ITEMS, hidden=16, max_len=10))
    save_artifact(tmp_path, model, ArtifactInfo(model.config, [str(i) for i in range(N_ITEMS)]))
    config = json.loads((tmp_path / "config.json").read_text())
    config["model"] = {k: v for k, v in config["model"].items() if not k.startswith("experts")}
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "config.json.sha256").unlink()  # as old: written before checksums too
    loaded = load_artifact(tmp_path)
    assert isinstance(loaded.model, SASRec) and loaded.info.model.experts == 0


def test_rejects_bad_configs_and_partitions() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        build_model(ModelConfig(n_items=N_ITEMS, experts=1))
    with pytest.raises(ValueError, match="sasrec"):
        build_model(ModelConfig(arch="bert4rec", n_items=N_ITEMS, experts=3))
    model = build_model(ModelConfig(n_items=N_ITEMS, hidden=16, max_len=10, experts=3))
    with pytest.raises(RuntimeError, match="set_partition"):
        model.expert_items()
    with pytest.raises(ValueError, match="at least one item"):
        model.set_partition(np.zeros(N_ITEMS + 1, dtype=np.int64))
    with pytest.raises(ValueError, match="shape"):
        model.set_partition(np.zeros(5, dtype=np.int64))


def test_cli_trains_hpserec_artifact(tmp_path: Path) -> None:
    out, report = tmp_path / "teacher", tmp_path / "metrics.json"
    command = [
        sys.executable, "-m", "service.cli", "teacher", "train", "--dataset", "synthetic:100:60",
        "--experts", "3", "--hidden", "16", "--max-len", "10", "--max-epochs", "1",
        "--out", str(out), "--json", str(report),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(report.read_text())
    sizes = summary["training"]["expert_group_sizes"]
    assert len(sizes) == 3 and min(sizes) > 0 and sum(sizes) == summary["dataset"]["items"]
    artifact = load_artifact(out)
    assert isinstance(artifact.model, HPSERec) and artifact.info.model.experts == 3
    groups = artifact.model.item_group[1:].numpy()
    assert np.bincount(groups, minlength=3).tolist() == sizes
    assert 0.0 <= summary["test"]["tail_items"]["HR@10"] <= 1.0
