"""Summary figures of a dataset, as a user checks them before training on it."""

from __future__ import annotations

from typing import Any

import numpy as np

from seqrec.data.dataset import SequenceDataset, leave_one_out


def dataset_stats(dataset: SequenceDataset) -> dict[str, Any]:
    lengths = dataset.sequences.lengths
    counts = np.bincount(dataset.sequences.items, minlength=dataset.n_items + 1)[1:]
    stats = dataset.card() | {
        "density": round(dataset.n_interactions / (dataset.n_users * dataset.n_items), 5),
        "history length min/median/mean/max": (
            f"{lengths.min()}/{np.median(lengths):g}/{lengths.mean():.1f}/{lengths.max()}"
        ),
        "item count min/median/max": f"{counts.min()}/{np.median(counts):g}/{counts.max()}",
    }
    too_short = int((lengths < 3).sum())
    if too_short:
        stats["users too short for leave-one-out (< 3 items)"] = too_short
        return stats
    split = leave_one_out(dataset)
    head_items = split.item_is_head[1:]
    train_counts = np.bincount(split.train.items, minlength=dataset.n_items + 1)[1:]
    return stats | {
        "head users (train length above p80)": int(split.user_is_head.sum()),
        "head items (train count above q0.8)": int(head_items.sum()),
        "share of training interactions on head items": round(
            float(train_counts[head_items].sum() / train_counts.sum()), 3
        ),
    }
