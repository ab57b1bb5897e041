"""The student's loss on one batch, for a plain backbone or an HPSERec expert stack.

A plain student is scored by the objective on its last-position logits. An HPSERec student
(DESIGN section 7) is scored expert by expert: each expert sees the history filtered to its
cumulative item set and learns the teacher's answer restricted to those items (ranks compacted,
negatives drawn from its items), and the experts' feed-forward and feedback couplings are added.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distill.config import ObjectiveConfig
from distill.objectives import distillation_loss
from seqrec.models.base import SequentialRecommender
from seqrec.models.hpserec import HPSERec


@dataclass
class Batch:
    """One batch on the training device."""

    seqs: torch.Tensor  # [B, max_len] left-padded model input
    history: torch.Tensor  # [B, W] the whole history, never used as negatives
    topk: torch.Tensor  # [B, k]
    reliability: torch.Tensor  # [B]
    views: torch.Tensor  # [B, max_len] a truncated view of `seqs` for InfoNCE
    view_valid: torch.Tensor  # [B]
    # [B, k] the black box's scores of `topk` and [B] which rows have them: only when the
    # objective learns from scores.
    teacher_scores: torch.Tensor | None = None
    has_scores: torch.Tensor | None = None


def restrict_answers(topk: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """The answers without items outside `allowed` [n_items + 1], the rest moved up in order."""
    return _restrict(topk, allowed)[0]


def _restrict(topk: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`restrict_answers` and the order it took the slots in, so that the teacher's scores can
    move with their items (`scores.gather(1, order)`)."""
    keep = allowed[topk] & (topk != 0)
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    restricted = torch.where(keep.gather(1, order), topk.gather(1, order), torch.zeros_like(topk))
    return restricted, order


def student_loss(
    model: SequentialRecommender,
    batch: Batch,
    objective: ObjectiveConfig,
    negative_pool: torch.Tensor,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The objective on this batch (summed over experts for HPSERec), and its parts."""
    if isinstance(model, HPSERec):
        return _experts_loss(model, batch, objective, generator)
    full = model.user_repr(batch.seqs)
    view = model.user_repr(batch.views) if objective.needs_views else full
    return distillation_loss(
        objective,
        model.scores_from_hidden(full),
        batch.topk,
        batch.reliability,
        full,
        view,
        batch.view_valid,
        negative_pool,
        exclude=batch.history,
        generator=generator,
        teacher_scores=batch.teacher_scores,
        has_scores=batch.has_scores,
    )


def _experts_loss(
    model: HPSERec,
    batch: Batch,
    objective: ObjectiveConfig,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, dict[str, float]]:
    outputs = model.expert_outputs(batch.seqs)
    views = model.expert_outputs(batch.views) if objective.needs_views else outputs
    items = model.expert_items()
    total = model.coupling_loss(outputs)
    parts: dict[str, float] = {}
    for expert, (out, view) in enumerate(zip(outputs, views, strict=True)):
        pool = items[expert].nonzero().squeeze(1)
        topk, order = _restrict(batch.topk, items[expert])
        scores = None if batch.teacher_scores is None else batch.teacher_scores.gather(1, order)
        loss, expert_parts = distillation_loss(
            objective,
            out.logits,
            torch.where(out.valid.unsqueeze(1), topk, torch.zeros_like(topk)),
            batch.reliability,
            out.repr,
            view.repr,
            batch.view_valid & out.valid & view.valid,
            pool,
            exclude=batch.history,
            generator=generator,
            teacher_scores=scores,
            has_scores=batch.has_scores,
        )
        total = total + loss
        for name, value in expert_parts.items():
            parts[name] = parts.get(name, 0.0) + value / len(outputs)
    return total, parts
