"""One supervised run end to end: split, build, train, evaluate on test, save the artifact."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqrec.artifacts import ArtifactInfo, save_artifact
from seqrec.data.dataset import LeaveOneOutSplit, SequenceDataset, leave_one_out
from seqrec.evaluate import evaluate
from seqrec.longtail import partition_items
from seqrec.models import ModelConfig, build_model
from seqrec.models.hpserec import HPSERec
from seqrec.train import TrainConfig, train_model


@dataclass
class RunSummary:
    """What a training run reports: enough for a script to compare runs without the model."""

    dataset: dict[str, Any]
    model: dict[str, Any]
    training: dict[str, Any]
    test: dict[str, dict[str, float]]
    version: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def expert_partition(split: LeaveOneOutSplit, config: ModelConfig) -> np.ndarray:
    """HPSERec item groups from training-split popularity only (validation/test never leak)."""
    counts = np.bincount(split.train.items, minlength=split.n_items + 1)
    return partition_items(
        counts,
        n_groups=config.experts,
        n_bins=config.experts_bins,
        alpha=config.experts_alpha,
        gamma=config.experts_gamma,
    )


def train_supervised(
    dataset: SequenceDataset,
    model_config: ModelConfig,
    train_config: TrainConfig,
    out_dir: str | Path,
) -> RunSummary:
    """Train on the leave-one-out split, test with full ranking, write the artifact to out_dir."""
    start = time.perf_counter()
    split = leave_one_out(dataset)
    model_config.n_items = dataset.n_items
    torch.manual_seed(train_config.seed)  # the initial weights are part of the seeded run
    model = build_model(model_config)
    extra = {}
    if isinstance(model, HPSERec):
        groups = expert_partition(split, model_config)
        model.set_partition(groups)
        extra["expert_group_sizes"] = np.bincount(groups[1:], minlength=model.n_experts).tolist()
    result = train_model(model, split, train_config)
    test = evaluate(model, split, stage="test", seed=train_config.seed)
    training = {**asdict(train_config), **result.to_dict(), **extra}
    info = ArtifactInfo(
        model=model_config,
        item_ids=dataset.item_ids.tolist(),
        dataset=dataset.card(),
        metrics={"test": test},
        training=training,
    )
    version = save_artifact(out_dir, model.cpu(), info)
    return RunSummary(
        dataset=info.dataset,
        model=asdict(model_config),
        training=training,
        test=test,
        version=version,
        seconds=time.perf_counter() - start,
    )
