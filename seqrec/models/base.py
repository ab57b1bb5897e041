"""What every backbone shares: the transformer encoder and the common interface.

Input sequences are LEFT-padded LongTensors [B, L] (0 = padding, most recent item last), so the
prediction for "what comes next" is always read at the last position. Positions are counted from
the end of the sequence, which makes a padded batch give exactly the logits of the unpadded one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import nn

from seqrec.models.config import ModelConfig
from seqrec.models.dropout import Dropout, attention

_PACKED_SIZES = 8  # sizes of packed rows per batch shape (see `_item_rows`)


class TransformerBlock(nn.Module):
    """Pre-norm self-attention + feed-forward block."""

    def __init__(self, hidden: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if hidden % n_heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.attn_norm = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.attn_out = nn.Linear(hidden, hidden)
        self.ff_norm = nn.LayerNorm(hidden)
        self.ff = nn.Sequential(
            nn.Linear(hidden, 4 * hidden),
            nn.GELU(),
            Dropout(dropout),
            nn.Linear(4 * hidden, hidden),
        )
        self.dropout = Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor,
        rows: torch.Tensor,
        last_only: bool = False,
    ) -> torch.Tensor:
        """[B, L, d] -> [B, L, d], or [B, 1, d] for the last position alone with `last_only`.

        `rows` are the flat positions (b * L + l) of real items: the position-wise layers
        (norms, projections, feed-forward) run on those alone and padding comes out as zeros,
        as the encoder needs it. Only attention sees the padded [B, L] layout. With
        `last_only` the last position still attends to every key, so its output is the same;
        skipping the other queries and their feed-forward saves most of the block when only
        the next-item prediction is read (student training, serving).
        """
        b, length, d = x.shape
        items = _pack(x.reshape(b * length, d), rows)
        normed = self.attn_norm(items)
        if last_only:
            x = x[:, -1]
            q = F.linear(self.attn_norm(x), self.qkv.weight[:d], self.qkv.bias[:d]).unsqueeze(1)
            kv = _unpack(F.linear(normed, self.qkv.weight[d:], self.qkv.bias[d:]), rows, b, length)
            k, v = kv.split(d, dim=-1)
            attn_mask = attn_mask[:, :, -1:]
        else:
            q, k, v = _unpack(self.qkv(normed), rows, b, length).split(d, dim=-1)
        heads = (t.view(b, -1, self.n_heads, d // self.n_heads).transpose(1, 2) for t in (q, k, v))
        attended = attention(*heads, attn_mask, self.dropout.p if self.training else 0.0)
        attended = attended.transpose(1, 2).reshape(-1, d)
        if last_only:
            x = x + self.dropout(self.attn_out(attended))
            return (x + self.dropout(self.ff(self.ff_norm(x)))).unsqueeze(1)
        items = items + self.dropout(self.attn_out(_pack(attended, rows)))
        items = items + self.dropout(self.ff(self.ff_norm(items)))
        return _unpack(items, rows, b, length)


def _item_rows(valid: torch.Tensor) -> torch.Tensor:
    """Flat positions of the real items of [B, L] `valid`, rounded up to a multiple of an
    eighth of B * L with the index B * L (a spare row of zeros, see `_pack`): a batch's packed
    tensors then take one of 8 sizes per shape instead of any size, which glibc's allocator
    reuses. Sizes that changed with every batch fragmented its heap: a BAHSD student's RSS grew
    every epoch (0.99, 1.32 and 1.54 GB after epochs 1 to 3 on the demo's probe set, against a
    steady 0.65 to 0.70 GB for the padded blocks and for these)."""
    total = valid.numel()
    rows = valid.reshape(-1).nonzero().squeeze(1)
    step = -(-total // _PACKED_SIZES)
    size = min(-(-len(rows) // step) * step, total)
    return F.pad(rows, (0, size - len(rows)), value=total)


def _pack(flat: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The rows [N, w] of the flat padded layout [B * L, w] at `rows`; the index B * L reads
    an extra row of zeros (the spare rows that round N up)."""
    return F.pad(flat, (0, 0, 0, 1)).index_select(0, rows)


def _unpack(packed: torch.Tensor, rows: torch.Tensor, b: int, length: int) -> torch.Tensor:
    """Rows of real items [N, w] back in the padded layout [B, L, w], zeros at padding."""
    full = packed.new_zeros(b * length + 1, packed.shape[1])
    return full.index_copy(0, rows, packed)[:-1].view(b, length, -1)


class SequentialRecommender(nn.Module, ABC):
    """Item embeddings (tied with the output layer) + position embeddings + transformer blocks.

    Subclasses decide the attention pattern, how inference input is built, and the training loss.
    """

    causal: bool

    def __init__(self, config: ModelConfig, n_embeddings: int) -> None:
        super().__init__()
        self.config = config
        self.item_emb = nn.Embedding(n_embeddings, config.hidden, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, config.hidden)
        self.emb_dropout = Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(config.hidden, config.n_heads, config.dropout)
            for _ in range(config.n_blocks)
        )
        self.final_norm = nn.LayerNorm(config.hidden)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)

    @property
    def n_items(self) -> int:
        return self.config.n_items

    def encode(self, seqs: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """Hidden states [B, L, d] for left-padded item ids [B, L] ([B, 1, d]: `last_only`)."""
        return self.encode_with(seqs, self.blocks, self.final_norm, last_only)

    def encode_with(
        self,
        seqs: torch.Tensor,
        blocks: nn.ModuleList,
        final_norm: nn.LayerNorm,
        last_only: bool = False,
    ) -> torch.Tensor:
        """The shared embedding and masking, through the given block stack.

        `last_only`: the final block computes the last position alone (see TransformerBlock).
        """
        length = seqs.shape[1]
        if length > self.config.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len {self.config.max_len}")
        valid = seqs != 0
        positions = torch.arange(length - 1, -1, -1, device=seqs.device)
        x = self.item_emb(seqs) * self.config.hidden**0.5 + self.pos_emb(positions)
        x = self.emb_dropout(x) * valid.unsqueeze(-1)
        mask = self._attention_mask(valid)
        rows = _item_rows(valid)
        for depth, block in enumerate(blocks):
            if last_only and depth == len(blocks) - 1:
                return final_norm(block(x, mask, rows, last_only=True) * valid[:, -1:, None])
            x = block(x, mask, rows)
        return final_norm(x[:, -1:] if last_only else x)

    def _attention_mask(self, valid: torch.Tensor) -> torch.Tensor:
        """[B, 1, L, L] boolean: attend to real keys (causally for SASRec); pads see themselves.

        The diagonal is always allowed so that padding rows never have every key masked (which
        would give NaN); their outputs are zeroed anyway.
        """
        length = valid.shape[1]
        eye = torch.eye(length, dtype=torch.bool, device=valid.device)
        allowed = valid[:, None, :].expand(-1, length, -1)
        if self.causal:
            allowed = allowed & torch.ones_like(eye).tril()
        return (allowed | eye).unsqueeze(1)

    def scores_from_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """Scores over items 0..n_items from hidden states [..., d]; padding scored -inf."""
        weight = self.item_emb.weight[: self.n_items + 1]
        scores = hidden @ weight.T + self.output_bias()
        scores[..., 0] = float("-inf")
        return scores

    def output_bias(self) -> torch.Tensor | float:
        return 0.0

    def user_repr(self, seqs: torch.Tensor) -> torch.Tensor:
        """The representation [B, d] the next-item prediction is made from."""
        return self.encode(self.inference_input(seqs), last_only=True)[:, -1]

    def logits(self, seqs: torch.Tensor) -> torch.Tensor:
        """Next-item scores [B, n_items + 1] at the last position (column 0 is -inf)."""
        return self.scores_from_hidden(self.user_repr(seqs))

    def inference_input(self, seqs: torch.Tensor) -> torch.Tensor:
        return seqs

    @abstractmethod
    def training_loss(self, seqs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Loss on a batch of left-padded training windows [B, max_len + 1]."""
