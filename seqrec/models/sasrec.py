"""SASRec trained with cross-entropy over the full catalogue at every position.

Causal self-attention; every position predicts the next item, scored against all items (the
"full softmax" variant shown to beat the original negative-sampling loss by a wide margin).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from seqrec.models.base import ModelConfig, SequentialRecommender


class SASRec(SequentialRecommender):
    causal = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config, n_embeddings=config.n_items + 1)

    def training_loss(self, seqs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        inputs, targets = seqs[:, :-1], seqs[:, 1:]
        # A target whose input slot is padding has no history to predict it from.
        keep = (inputs != 0) & (targets != 0)
        hidden = self.encode(inputs)[keep]
        return F.cross_entropy(self.scores_from_hidden(hidden), targets[keep])
