"""Sequential recommendation backbones behind one interface: `logits(seqs)`, `user_repr(seqs)`.

This package's namespace holds only what imports no torch (`ModelConfig`; `build_model` loads
the backbones when it is called), so commands can check their options before torch loads. The
backbones come from their own modules: `seqrec.models.base` (`SequentialRecommender`),
`.sasrec`, `.bert4rec`, `.hpserec`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from seqrec.models.config import ARCHS, ModelConfig

if TYPE_CHECKING:
    from seqrec.models.base import SequentialRecommender


def build_model(config: ModelConfig) -> SequentialRecommender:
    """The backbone `config.arch`, or HPSERec experts on it when `config.experts` is set."""
    from seqrec.models.bert4rec import BERT4Rec
    from seqrec.models.hpserec import HPSERec
    from seqrec.models.sasrec import SASRec

    if config.n_items < 1:
        raise ValueError("config.n_items must be set to the catalogue size")
    if config.experts:
        return HPSERec(config)
    return {"sasrec": SASRec, "bert4rec": BERT4Rec}[config.arch](config)


__all__ = ["ARCHS", "ModelConfig", "build_model"]
