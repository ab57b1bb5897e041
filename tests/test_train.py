"""Training windows and the per-architecture training defaults."""

import numpy as np
import pytest
import torch

import seqrec.train
from seqrec.data.dataset import leave_one_out
from seqrec.data.loading import load_dataset
from seqrec.data.sequences import Sequences
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
