"""One distillation run: a probe set in, a student artifact and its summary out.

Steps: read the answered probes, score each query's reliability from its truncated views,
hold out whole queries for model selection, build the training examples the objective calls
for, train the student (an HPSERec expert stack when `model.experts` > 0, partitioned by the
items' popularity in the probes), and write the student as a normal artifact, so
`recmimic teacher serve` and the service can serve it like any model.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch

from distill.config import DistillConfig
from distill.examples import (
    Examples,
    answered_view_examples,
    concat,
    heldout_split,
    query_examples,
)
from distill.probes import ProbeData, ProbeDataError, first_answers, load_probes
from distill.reliability import reliability, reliability_by_bucket
from distill.train import fit, remove_checkpoint
from distill.warm import warm_start
from seqrec.artifacts import ArtifactInfo, save_artifact
from seqrec.longtail.partition import partition_items
from seqrec.models import ModelConfig, build_model
from seqrec.models.base import SequentialRecommender

SUMMARY_FILENAME = "distill.json"


@dataclass
class DistillSummary:
    """What a run did; also written to `distill.json` beside the artifact."""

    probe_set: str
    queries: int
    heldout_queries: int
    examples: int
    n_items: int
    unlisted_items: int | None  # of those, ids the black box's listing lacked (None: no listing)
    reliability_by_length: dict[str, dict[str, float]]
    heldout: dict[str, float]
    best_epoch: int
    epochs_run: int
    resumed_from_epoch: int
    seconds: float
    version: str
    config: dict[str, Any]
    numerics: dict[str, Any]  # torch build, device and threads: what bit-for-bit repeats need

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def item_popularity(probes: ProbeData, queries: np.ndarray) -> np.ndarray:
    """How often each item occurs in the queries' histories and answers: [n_items + 1]."""
    seen = np.concatenate([probes.histories[queries].ravel(), probes.topk[queries].ravel()])
    counts = np.bincount(seen, minlength=probes.n_items + 1)
    counts[0] = 0
    return counts


def build_student(model_config: ModelConfig, popularity: np.ndarray) -> SequentialRecommender:
    """The student backbone; an HPSERec student gets its item partition from `popularity`."""
    model = build_model(model_config)
    if model_config.experts:
        groups = partition_items(
            popularity,
            n_groups=model_config.experts,
            n_bins=model_config.experts_bins,
            alpha=model_config.experts_alpha,
            gamma=model_config.experts_gamma,
        )
        model.set_partition(groups)
    return model


def scores_for(probes: ProbeData, config: DistillConfig) -> ProbeData:
    """The probes, with the black box's scores only for an objective that learns from them
    (ranks alone keep the memory and batches they had); `ProbeDataError` when the objective
    needs scores and none of the answers it trains on came with any."""
    if config.objective.score_weight == 0:
        return replace(probes, scores=None, has_scores=None)
    if probes.has_scores is None or not probes.has_scores.any():
        within = "" if config.answers is None else f" in its first {config.answers} answers"
        raise ProbeDataError(
            f"the probe set holds no scores{within}; --score-weight needs answers that came "
            "with the black box's scores (0 learns from ranks alone)"
        )
    return probes


def _training_examples(
    probes: ProbeData, c: np.ndarray, queries: np.ndarray, view_examples: bool
) -> Examples:
    """The training queries' examples, plus their answered views when `view_examples`."""
    parts = [query_examples(probes, c, queries)]
    if view_examples:
        parts.append(answered_view_examples(probes, c, queries))
    return concat(parts)


def distill(
    config: DistillConfig,
    should_stop: Callable[[], bool] | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> DistillSummary:
    """Train a student from `config.probes` into `config.out`; resumes a killed run's training."""
    started = time.monotonic()
    probes = load_probes(config.probes)
    if config.answers is not None:
        probes = first_answers(probes, config.answers)
    probes = scores_for(probes, config)
    c = reliability(
        probes.topk, probes.view_topk, probes.view_usable, probes.lengths, config.reliability
    )
    train_q, heldout_q = heldout_split(probes.n_queries, config.heldout, config.seed)
    train = _training_examples(probes, c, train_q, config.view_examples)
    heldout = query_examples(probes, c, heldout_q)
    model_config = ModelConfig(**{**asdict(config.model), "n_items": probes.n_items})
    popularity = item_popularity(probes, train_q)
    item_ids, run_info, n_queries = probes.item_ids, probes.run_info, probes.n_queries
    unlisted = probes.unlisted_items
    by_length = reliability_by_bucket(c, probes.lengths)
    del probes, c  # training needs only the examples: on every ML-100k prefix this frees 0.4 GB

    torch.manual_seed(config.seed)  # initial weights are part of the seeded run
    model = build_student(model_config, popularity)
    if config.init_from is not None:
        warm_start(model, config.init_from, item_ids)
    negative_pool = np.arange(1, model_config.n_items + 1)
    result = fit(model, train, heldout, negative_pool, config, should_stop, on_epoch)

    info = ArtifactInfo(
        model=model_config,
        item_ids=item_ids,
        dataset={"probe_set": str(config.probes), "run_info": run_info},
        metrics={"heldout": result.best_agreement},
        training={**config.to_dict(), **result.to_dict()},
    )
    version = save_artifact(config.out, model.cpu(), info)
    summary = DistillSummary(
        probe_set=str(config.probes),
        queries=n_queries,
        heldout_queries=len(heldout_q),
        examples=len(train),
        n_items=model_config.n_items,
        unlisted_items=unlisted,
        reliability_by_length=by_length,
        heldout=result.best_agreement,
        best_epoch=result.best_epoch,
        epochs_run=result.epochs_run,
        resumed_from_epoch=result.resumed_from_epoch,
        seconds=time.monotonic() - started,
        version=version,
        config=config.to_dict(),
        numerics=result.numerics,
    )
    (config.out / SUMMARY_FILENAME).write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    remove_checkpoint(config.out)
    return summary
