"""BERT4Rec: bidirectional attention trained with the cloze (masked item) objective.

At inference a [MASK] token is appended after the history and its prediction is the next item.
The output layer is tied to the item embeddings plus a per-item bias.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seqrec.models.base import ModelConfig, SequentialRecommender


class BERT4Rec(SequentialRecommender):
    causal = False

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config, n_embeddings=config.n_items + 2)
        self.mask_token = config.n_items + 1
        self.bias = nn.Parameter(torch.zeros(config.n_items + 1))

    def output_bias(self) -> torch.Tensor:
        return self.bias

    def inference_input(self, seqs: torch.Tensor) -> torch.Tensor:
        """Append [MASK]; drop the oldest position when the window is already full."""
        mask_col = torch.full_like(seqs[:, :1], self.mask_token)
        if seqs.shape[1] >= self.config.max_len:
            seqs = seqs[:, seqs.shape[1] - self.config.max_len + 1 :]
        return torch.cat([seqs, mask_col], dim=1)

    def training_loss(self, seqs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        seqs = seqs[:, -self.config.max_len :]
        valid = seqs != 0
        draw = torch.rand(seqs.shape, generator=generator, device=seqs.device)
        masked = valid & (draw < self.config.mask_ratio)
        # Every row trains on its last item too, which is exactly the inference task.
        masked[:, -1] |= valid[:, -1]
        inputs = seqs.masked_fill(masked, self.mask_token)
        hidden = self.encode(inputs)[masked]
        return F.cross_entropy(self.scores_from_hidden(hidden), seqs[masked])
