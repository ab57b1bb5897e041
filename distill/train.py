"""The student trainer: epochs over probe examples, selection on held-out probes, checkpoints.

Each epoch shuffles the examples with a seeded generator, draws one truncated view per example
for InfoNCE, and takes AdamW steps on the objective. After each epoch the student answers the
held-out queries and is scored by its agreement with the teacher's answers (Agr@10, then Agr@1)
— what an attacker can measure without real test data. The best epoch's weights are kept.

A checkpoint is written after every epoch; a run started again on the same out directory with
the same settings resumes from it (a worker that died mid-training loses at most one epoch).
`should_stop` is polled between batches so a cancelled job stops within one batch.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.checkpoint import (
    load_checkpoint,
    optimizer_tensors,
    restore_optimizer,
    save_checkpoint,
)
from distill.config import DistillConfig
from distill.examples import Examples, pick_views, suffixes
from distill.student import Batch, student_loss
from seqrec.epoch_bar import EpochBar
from seqrec.metrics import agreement_at_k
from seqrec.models.base import SequentialRecommender
from seqrec.train import numerics, resolve_device

CHECKPOINT_DIR = "checkpoint"


class Cancelled(RuntimeError):
    """`should_stop` asked the trainer to stop; the last checkpoint is kept."""


@dataclass
class FitResult:
    best_epoch: int
    best_agreement: dict[str, float]
    epochs_run: int
    seconds: float
    resumed_from_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    numerics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def answer_top(
    model: SequentialRecommender, histories: np.ndarray, k: int, batch_size: int = 1024
) -> np.ndarray:
    """The student's top-k [N, k] for left-padded histories, their own items masked (as the
    teacher does; 0 fills the slots of a history that leaves fewer unseen items). The model
    sees the most recent `max_len` items; the mask covers the whole padded history."""
    model.eval()
    device = next(model.parameters()).device
    width = min(k, model.n_items)
    out = np.zeros((len(histories), k), dtype=np.int64)
    max_len = model.config.max_len
    for start in range(0, len(histories), batch_size):
        rows = _id_tensor(histories[start : start + batch_size], device)
        scores = model.logits(rows[:, -max_len:]).scatter(1, rows, float("-inf"))
        best = scores.topk(width, dim=1)
        picked = best.indices.masked_fill(torch.isinf(best.values), 0)
        out[start : start + len(rows), :width] = picked.cpu().numpy()
    return out


def heldout_agreement(model: SequentialRecommender, heldout: Examples) -> dict[str, float]:
    """Mean Agr@1 and Agr@10 between the student's and the teacher's held-out answers."""
    student = answer_top(model, heldout.histories, 10)
    teacher = heldout.topk[:, :10]
    return {
        "agr1": float(agreement_at_k(student, teacher, 1).mean()),
        "agr10": float(agreement_at_k(student, teacher, 10).mean()),
    }


def _fingerprint(config: DistillConfig, n_train: int) -> str:
    """What a checkpoint must match to be resumed: every setting that shapes training."""
    settings = config.to_dict()
    for volatile in ("progress", "device", "out"):
        settings.pop(volatile)
    settings["objective"] = config.objective.identity()  # a checkpoint from before scores resumes
    payload = json.dumps({"settings": settings, "n_train": n_train}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _batch(
    examples: Examples,
    rows: np.ndarray,
    view_lengths: np.ndarray,
    max_len: int,
    device: torch.device,
) -> Batch:
    history = examples.histories[rows]
    seqs = history[:, -max_len:]
    views = suffixes(seqs, view_lengths[rows])

    return Batch(
        seqs=_id_tensor(seqs, device),
        history=_id_tensor(history, device),
        topk=_id_tensor(examples.topk[rows], device),
        reliability=torch.as_tensor(examples.reliability[rows], device=device).float(),
        views=_id_tensor(views, device),
        view_valid=torch.as_tensor(view_lengths[rows] > 0, device=device),
        **_score_tensors(examples, rows, device),
    )


def _score_tensors(
    examples: Examples, rows: np.ndarray, device: torch.device
) -> dict[str, torch.Tensor]:
    """The batch's teacher scores and which rows have them; nothing when the examples have none
    (`distill.run` keeps them only for an objective that learns from them)."""
    if examples.scores is None or examples.has_scores is None:
        return {}
    return {
        "teacher_scores": torch.as_tensor(examples.scores[rows], device=device),
        "has_scores": torch.as_tensor(examples.has_scores[rows], device=device),
    }


def _id_tensor(ids: np.ndarray, device: torch.device) -> torch.Tensor:
    """Dense ids, held as int32 (`distill.probes.ID_DTYPE`), as the int64 torch indexes with."""
    return torch.as_tensor(ids, device=device).long()


def fit(
    model: SequentialRecommender,
    train: Examples,
    heldout: Examples,
    negative_pool: np.ndarray,
    config: DistillConfig,
    should_stop: Callable[[], bool] | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> FitResult:
    """Train `model` in place on `train`; it ends holding the best held-out epoch's weights."""
    started = time.monotonic()
    device = resolve_device(config.device)
    model.to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    generator = torch.Generator(device=device).manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    pool = torch.as_tensor(negative_pool, device=device)
    checkpoint = config.out / CHECKPOINT_DIR
    fingerprint = _fingerprint(config, len(train))

    epoch, best_epoch, stale = 0, 0, 0
    best: dict[str, float] = {"agr10": -1.0, "agr1": -1.0}
    best_state = {name: t.detach().clone() for name, t in model.state_dict().items()}
    history: list[dict[str, float]] = []
    saved = load_checkpoint(checkpoint)
    if saved is not None and saved[1].get("fingerprint") == fingerprint:
        tensors, meta = saved
        model.load_state_dict({n[6:]: t for n, t in tensors.items() if n.startswith("model.")})
        best_state = {n[5:]: t.to(device) for n, t in tensors.items() if n.startswith("best.")}
        restore_optimizer(optimizer, tensors, meta)
        generator.set_state(tensors["generator"])
        torch.set_rng_state(tensors["torch_rng"])  # dropout draws from the global generator
        rng.bit_generator.state = meta["numpy_rng"]
        epoch, best_epoch, stale = meta["epoch"], meta["best_epoch"], meta["stale"]
        best, history = meta["best"], meta["history"]
    resumed_from = epoch

    bar = EpochBar(
        "distill", config.patience, config.max_epochs, config.progress, epoch, best_epoch
    )
    while epoch < config.max_epochs and stale < config.patience:
        model.train()
        order = rng.permutation(len(train))
        view_lengths = pick_views(train.view_lengths, rng)
        losses, parts_sum = [], {}
        for start in range(0, len(order), config.batch_size):
            if should_stop is not None and should_stop():
                bar.close()
                raise Cancelled("stopped on request")
            rows = order[start : start + config.batch_size]
            if len(rows) < 2:
                continue
            batch = _batch(train, rows, view_lengths, model.config.max_len, device)
            loss, parts = student_loss(model, batch, config.objective, pool, generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            for name, value in parts.items():
                parts_sum[name] = parts_sum.get(name, 0.0) + value
        epoch += 1
        scores = heldout_agreement(model, heldout)
        record = {
            "epoch": epoch,
            "loss": float(np.mean(losses)) if losses else 0.0,
            **{name: value / max(len(losses), 1) for name, value in parts_sum.items()},
            **scores,
        }
        history.append(record)
        if (scores["agr10"], scores["agr1"]) > (best["agr10"], best["agr1"]):
            best, best_epoch, stale = scores, epoch, 0
            best_state = {name: t.detach().clone() for name, t in model.state_dict().items()}
        else:
            stale += 1
        tensors, optimizer_meta = optimizer_tensors(optimizer)
        save_checkpoint(
            checkpoint,
            {
                **{f"model.{n}": t for n, t in model.state_dict().items()},
                **{f"best.{n}": t for n, t in best_state.items()},
                **tensors,
                "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
            },
            {
                **optimizer_meta,
                "fingerprint": fingerprint,
                "numpy_rng": rng.bit_generator.state,
                "epoch": epoch,
                "best_epoch": best_epoch,
                "stale": stale,
                "best": best,
                "history": history,
            },
        )
        bar.update(epoch, best_epoch, loss=f"{record['loss']:.3f}", agr10=f"{scores['agr10']:.3f}")
        if on_epoch is not None:
            on_epoch(epoch, record)
    bar.close()
    model.load_state_dict(best_state)
    return FitResult(
        best_epoch=best_epoch,
        best_agreement=best,
        epochs_run=epoch,
        seconds=time.monotonic() - started,
        resumed_from_epoch=resumed_from,
        history=history,
        numerics=numerics(device),
    )


def remove_checkpoint(out: Path) -> None:
    """Drop the checkpoint once the artifact is written: it is only for resuming."""
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
