"""Training windows and the per-architecture training defaults."""

import re

import numpy as np
import pytest
import torch

import seqrec.train
from seqrec.data.dataset import leave_one_out
from seqrec.data.loading import load_dataset
from seqrec.data.sequences import Sequences
from seqrec.epoch_bar import epoch_status
from seqrec.models import ModelConfig, build_model
from seqrec.train import TrainConfig, random_windows, train_model, training_windows


def test_random_windows_are_slices_ending_at_random_items() -> None:
    train = Sequences.from_lists([list(range(1, 31)), [7], [40, 41, 42]])
    width = 6
    ends = set()
    rng = np.random.default_rng(0)
    for _ in range(50):
        windows = random_windows(train, width, min_window=2, rng=rng)
        # As many windows per user as tiling cuts; the one-item user gives none.
        assert len(windows) == len(training_windows(train, width, min_window=2)) == 7
        for row in windows:
            items = row[row > 0].tolist()
            assert len(items) >= 2 and (row[: width - len(items)] == 0).all()
            user = next(seq.tolist() for seq in (train[0], train[2]) if items[0] in seq)
            at = user.index(items[0])
            assert user[at : at + len(items)] == items  # contiguous, oldest first
            assert len(items) == width or at == 0  # only a window at the start is padded
            ends.add(items[-1])
    assert len(ends) > 20  # ends spread over the histories, not the tiled cut points


def test_arch_defaults_leave_sasrec_alone_and_given_fields_win() -> None:
    assert TrainConfig.for_arch("sasrec") == TrainConfig()
    bert = TrainConfig.for_arch("bert4rec", seed=4)
    assert (bert.window_ends, bert.patience, bert.seed) == ("random", 20, 4)
    assert TrainConfig.for_arch("bert4rec", window_ends="tiled").window_ends == "tiled"


@pytest.mark.parametrize(("arch", "draws"), [("sasrec", 0), ("bert4rec", 2)])
def test_windows_redrawn_every_epoch_only_where_the_arch_wants(
    monkeypatch: pytest.MonkeyPatch, arch: str, draws: int
) -> None:
    calls = []

    def spy(*args: object, **kwargs: object) -> np.ndarray:
        calls.append(1)
        return random_windows(*args, **kwargs)

    monkeypatch.setattr(seqrec.train, "random_windows", spy)
    dataset = load_dataset("synthetic:60:40")
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, n_items=dataset.n_items, hidden=16, max_len=10))
    config = TrainConfig.for_arch(arch, max_epochs=2, progress=False, device="cpu")
    result = train_model(model, leave_one_out(dataset), config)
    assert result.epochs_run == 2 and len(calls) == draws


@pytest.mark.parametrize(
    ("epoch", "best", "expected"),
    [
        (12, 9, "epoch 12 (best 9, stops in 7 without a better one; cap 200)"),
        (46, 36, "epoch 46 (best 36; stops: 10 without a better one)"),
        (195, 194, "epoch 195 (best 194; cap 200, 5 left)"),
        (200, 200, "epoch 200 (best 200; stops: cap 200 reached)"),
    ],
)
def test_the_epoch_line_counts_patience_not_the_cap(epoch: int, best: int, expected: str) -> None:
    """A bar to the 200-epoch cap once showed an ETA of over an hour for a run that early
    stopping ended at epoch 46; the line now says what decides the end."""
    assert epoch_status(epoch, best, patience=10, max_epochs=200) == expected


def test_the_teachers_bar_shows_epochs_and_patience_without_an_eta(
    capsys: pytest.CaptureFixture[str],
) -> None:
    dataset = load_dataset("synthetic:60:40")
    model = build_model(ModelConfig(n_items=dataset.n_items, hidden=8, max_len=10, n_heads=1))
    train_model(model, leave_one_out(dataset), TrainConfig(max_epochs=3, patience=2, device="cpu"))
    shown = capsys.readouterr().err
    assert "train: epoch 1 (best 1, stops in 2 without a better one; cap 3)" in shown
    assert re.search(r"\d\d:\d\d<", shown) is None  # tqdm's "elapsed<remaining"
    assert "/3 " not in shown  # no count towards the cap
