"""HPSERec: long-tail experts over cumulative popularity groups, on a SASRec backbone.

The catalogue is partitioned into L groups by ascending popularity (`seqrec.longtail`); expert k
(0-based) sees and predicts only the items of groups 0..k, so the first expert specialises in the
tail and the last one, which sees everything, is the global expert. Experts share the item and
position embeddings and own their transformer blocks. They are coupled in both directions:
- feed-forward: expert k+1 is pulled towards expert k's softened prediction over expert k's
  items (KL, expert k detached), passing tail knowledge up;
- feedback: expert k's user representations are pulled towards expert k+1's distribution by
  entropic optimal transport (expert k+1 detached), passing the richer context down.

Serving and evaluation only see the global expert through `logits()` / `user_repr()`, so an
HPSERec artifact is used exactly like a plain backbone. The partition is a saved buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqrec.longtail.sinkhorn import sinkhorn_distance
from seqrec.models.base import ModelConfig, SequentialRecommender, TransformerBlock


@dataclass
class ExpertOutput:
    """One expert's view of a batch of histories."""

    repr: torch.Tensor  # [B, d] at the last position of the expert's filtered history
    logits: torch.Tensor  # [B, n_items+1], items outside the expert's set (and col 0) = -inf
    valid: torch.Tensor  # [B] bool, False where the filtered history is empty


class ExpertStack(nn.Module):
    """What an expert owns: its transformer blocks and final LayerNorm."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TransformerBlock(config.hidden, config.n_heads, config.dropout)
            for _ in range(config.n_blocks)
        )
        self.final_norm = nn.LayerNorm(config.hidden)


class HPSERec(SequentialRecommender):
    causal = True

    def __init__(self, config: ModelConfig) -> None:
        if config.experts < 2:
            raise ValueError(f"HPSERec needs at least 2 experts, got {config.experts}")
        super().__init__(config, n_embeddings=config.n_items + 1)
        # Every expert owns its stack, the global one included; the base's single stack goes.
        del self.blocks, self.final_norm
        self.experts = nn.ModuleList(ExpertStack(config) for _ in range(config.experts))
        # Group of each item (index 0 = padding); -1 until `set_partition` (or a loaded artifact).
        self.register_buffer("item_group", torch.full((config.n_items + 1,), -1, dtype=torch.long))

    @property
    def n_experts(self) -> int:
        return self.config.experts

    def set_partition(self, groups: np.ndarray | torch.Tensor) -> None:
        """Install the item groups [n_items + 1] (values 0..L-1, each group non-empty)."""
        groups = torch.as_tensor(groups)
        if groups.shape != self.item_group.shape or groups.dtype.is_floating_point:
            raise ValueError(f"groups must be integers of shape {tuple(self.item_group.shape)}")
        items = groups[1:].long()
        if items.min() < 0 or items.max() >= self.n_experts:
            raise ValueError(f"item groups must lie in 0..{self.n_experts - 1}")
        if (torch.bincount(items, minlength=self.n_experts) == 0).any():
            raise ValueError("every group needs at least one item")
        self.item_group[0] = 0
        self.item_group[1:] = items.to(self.item_group.device)

    def expert_items(self) -> torch.Tensor:
        """bool [L, n_items + 1]: expert k's items are groups 0..k; column 0 (padding) False."""
        if (self.item_group[1:] < 0).any():
            raise RuntimeError("HPSERec has no item partition yet: call set_partition first")
        levels = torch.arange(self.n_experts, device=self.item_group.device)
        allowed = self.item_group[None, :] <= levels[:, None]
        allowed[:, 0] = False
        return allowed

    def filter_history(self, seqs: torch.Tensor, expert: int) -> torch.Tensor:
        """Left-padded [B, L] keeping only the expert's items, in their original order."""
        return self._filter(seqs, self._allowed(expert))

    def encode(
        self, seqs: torch.Tensor, expert: int | None = None, last_only: bool = False
    ) -> torch.Tensor:
        """Hidden states [B, L, d] through one expert's stack (default: the global expert).

        The same embedding and masking as the single-stack backbone, with the expert's blocks.
        """
        stack = self.experts[-1 if expert is None else expert]
        return self.encode_with(seqs, stack.blocks, stack.final_norm, last_only)

    def expert_outputs(self, seqs: torch.Tensor) -> list[ExpertOutput]:
        """Every expert's last-position output for left-padded histories [B, L]."""
        allowed = self.expert_items()
        outputs = []
        for expert in range(self.n_experts):
            history = _trim(self._filter(seqs, allowed[expert]), min_width=1)
            hidden = self.encode(history, expert, last_only=True)[:, -1]
            outputs.append(
                ExpertOutput(
                    repr=hidden,
                    logits=self._scores(hidden, allowed[expert]),
                    valid=history[:, -1] != 0,
                )
            )
        return outputs

    def coupling_loss(self, outputs: list[ExpertOutput]) -> torch.Tensor:
        """Feed-forward KL (k -> k+1) plus Sinkhorn feedback (k+1 -> k) over adjacent experts.

        Both terms use only rows valid for both experts; the side giving the signal is detached,
        so the KL trains expert k+1 and the transport term trains expert k.
        """
        if len(outputs) != self.n_experts:
            raise ValueError(f"need {self.n_experts} expert outputs, got {len(outputs)}")
        config = self.config
        allowed = self.expert_items()
        total = outputs[0].repr.new_zeros(())
        for expert in range(self.n_experts - 1):
            low, high = outputs[expert], outputs[expert + 1]
            rows = low.valid & high.valid
            if not rows.any():
                continue
            columns = allowed[expert]
            teacher = low.logits.detach()[rows][:, columns] / config.experts_tau
            student = high.logits[rows][:, columns] / config.experts_tau
            log_p = F.log_softmax(teacher, dim=-1)
            kl = (log_p.exp() * (log_p - F.log_softmax(student, dim=-1))).sum(-1).mean()
            transport = sinkhorn_distance(
                low.repr[rows], high.repr[rows].detach(), epsilon=config.experts_epsilon
            )
            total = total + config.experts_beta * config.experts_tau**2 * kl
            total = total + config.experts_lambda * transport
        return total

    def training_loss(self, seqs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Per-expert next-item cross-entropy on filtered windows, plus the coupling loss.

        For the coupling, an expert's output is its last input position; a row counts only when
        the window's final item belongs to the expert, so adjacent experts compare predictions of
        the same next item from the same history.
        """
        allowed = self.expert_items()
        next_item = seqs[:, -1]
        losses, outputs = [], []
        for expert in range(self.n_experts):
            window = _trim(self._filter(seqs, allowed[expert]), min_width=2)
            inputs, targets = window[:, :-1], window[:, 1:]
            hidden = self.encode(inputs, expert)
            keep = (inputs != 0) & (targets != 0)
            if keep.any():
                scores = self._scores(hidden[keep], allowed[expert])
                losses.append(F.cross_entropy(scores, targets[keep]))
            last = hidden[:, -1]
            outputs.append(
                ExpertOutput(
                    repr=last,
                    logits=self._scores(last, allowed[expert]),
                    valid=(inputs[:, -1] != 0) & allowed[expert][next_item],
                )
            )
        supervised = torch.stack(losses).sum() if losses else seqs.new_zeros((), dtype=torch.float)
        return supervised + self.coupling_loss(outputs)

    def _allowed(self, expert: int) -> torch.Tensor:
        if not 0 <= expert < self.n_experts:
            raise IndexError(f"expert {expert} out of range 0..{self.n_experts - 1}")
        return self.expert_items()[expert]

    @staticmethod
    def _filter(seqs: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        keep = allowed[seqs]  # padding is never allowed
        # A stable sort on the keep flag moves kept items right, each side in original order.
        order = torch.sort(keep.to(torch.int8), dim=1, stable=True).indices
        return torch.gather(seqs * keep, 1, order)

    def _scores(self, hidden: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        return self.scores_from_hidden(hidden).masked_fill(~allowed, float("-inf"))


def _trim(seqs: torch.Tensor, min_width: int) -> torch.Tensor:
    """Drop leading all-padding columns: positions count from the end, so outputs are unchanged
    and tail experts, whose filtered histories are short, run on much shorter sequences."""
    longest = int((seqs != 0).sum(1).max()) if len(seqs) else 0
    return seqs[:, -max(longest, min_width) :]
