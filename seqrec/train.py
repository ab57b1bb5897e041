"""Supervised training of a backbone on the leave-one-out split, with early stopping.

Each epoch slices every user's training sequence into windows of `max_len + 1` items from the
end backwards (so long histories contribute all their items, not just the last window),
shuffles them with a seeded generator and takes AdamW steps on the backbone's own loss.
With `window_ends="random"` every epoch instead draws as many windows per user, each ending at a
random item, so the model sees new contexts (and new last items) every epoch.
Validation NDCG@10 picks the best epoch; its weights are restored at the end.
The trainer holds no global state: everything it needs is passed in, so it can be sharded.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from seqrec.data.dataset import LeaveOneOutSplit
from seqrec.data.sequences import Sequences, padded_windows
from seqrec.epoch_bar import EpochBar
from seqrec.evaluate import evaluate
from seqrec.models.base import SequentialRecommender
from seqrec.train_config import TrainConfig  # its home is torch-free; imported from here too


@dataclass
class TrainResult:
    best_epoch: int
    best_valid_ndcg10: float
    epochs_run: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    numerics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def numerics(device: torch.device) -> dict[str, Any]:
    """What decides trained weights besides data, config and seed, kept with the artifact.

    The order of float reductions follows torch's build, the device and the intra-op thread
    count of the training thread, so a seeded run repeats bit for bit only when these match
    (on ML-100k, 1 thread and 2 threads gave students with different weights). On the CPU the
    vector instructions torch's kernels use count too: the demo's 40-epoch student came out
    different with `ATEN_CPU_CAPABILITY=avx2` than with the machine's AVX512.
    """
    kept = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads()}
    if device.type == "cpu":
        kept["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return kept


def _windows_per_user(lengths: np.ndarray, width: int) -> np.ndarray:
    """How many windows of `width` items (overlapping by one) cover each sequence."""
    return np.maximum(np.ceil((lengths - 1) / (width - 1)).astype(np.int64), 0)


def training_windows(train: Sequences, width: int, min_window: int) -> np.ndarray:
    """Left-padded windows [n, width]: each sequence cut into chunks of `width` from its end."""
    per_user = _windows_per_user(train.lengths, width)
    user = np.repeat(np.arange(train.n_users), per_user)
    # Consecutive windows overlap by one item so every item is a target exactly once.
    back = np.arange(per_user.sum()) - np.repeat(np.cumsum(per_user) - per_user, per_user)
    ends = train.offsets[user + 1] - back * (width - 1)
    starts = np.maximum(train.offsets[user], ends - width)
    keep = ends - starts >= min_window
    return padded_windows(train.items, starts[keep], ends[keep], width)


def random_windows(
    train: Sequences, width: int, min_window: int, rng: np.random.Generator
) -> np.ndarray:
    """As many windows per user as `training_windows` cuts, each ending at a random item.

    An end is uniform over the user's items from the `min_window`-th on; the window holds up
    to `width` items before it (left-padded).
    """
    per_user = _windows_per_user(train.lengths, width)
    per_user[train.lengths < min_window] = 0
    user = np.repeat(np.arange(train.n_users), per_user)
    first_end = train.offsets[user] + min_window
    span = train.offsets[user + 1] - first_end + 1
    ends = first_end + (rng.random(len(user)) * span).astype(np.int64)
    starts = np.maximum(train.offsets[user], ends - width)
    return padded_windows(train.items, starts, ends, width)


def train_model(
    model: SequentialRecommender, split: LeaveOneOutSplit, config: TrainConfig
) -> TrainResult:
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    device = resolve_device(config.device)
    model.to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    width = model.config.max_len + 1
    tiled = None
    if config.window_ends == "tiled":
        tiled = training_windows(split.train, width, config.min_window)
    best_state, best_ndcg, best_epoch, history = None, -1.0, 0, []
    start = time.perf_counter()
    bar = EpochBar("train", config.patience, config.max_epochs, enabled=config.progress)
    for epoch in range(1, config.max_epochs + 1):
        model.train()
        windows = tiled
        if windows is None:  # random ends: new windows every epoch
            windows = random_windows(split.train, width, config.min_window, rng)
        order = rng.permutation(len(windows))
        losses = []
        for first in range(0, len(order), config.batch_size):
            batch = torch.as_tensor(
                windows[order[first : first + config.batch_size]], device=device
            )
            loss = model.training_loss(batch, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        ndcg = evaluate(model, split, stage="valid", ks=(10,), n_negatives=0)["overall"]["NDCG@10"]
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "valid_ndcg10": ndcg})
        if ndcg > best_ndcg:
            best_state, best_ndcg, best_epoch = copy.deepcopy(model.state_dict()), ndcg, epoch
        bar.update(epoch, best_epoch, loss=f"{np.mean(losses):.3f}", ndcg10=f"{ndcg:.4f}")
        if epoch - best_epoch >= config.patience:
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(
        best_epoch=best_epoch,
        best_valid_ndcg10=best_ndcg,
        epochs_run=len(history),
        seconds=time.perf_counter() - start,
        history=history,
        numerics=numerics(device),
    )
