"""Sequential recommendation backbones behind one interface: `logits(seqs)`, `user_repr(seqs)`.

`ModelConfig` is importable without torch (`seqrec.models.config`), so commands can check their
options first; the torch modules load on first use of anything else here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from seqrec.models.config import ARCHS, ModelConfig

if TYPE_CHECKING:
    from seqrec.models.base import SequentialRecommender
    from seqrec.models.bert4rec import BERT4Rec
    from seqrec.models.hpserec import ExpertOutput, HPSERec
    from seqrec.models.sasrec import SASRec

_HOMES = {
    "SequentialRecommender": "seqrec.models.base",
    "BERT4Rec": "seqrec.models.bert4rec",
    "ExpertOutput": "seqrec.models.hpserec",
    "HPSERec": "seqrec.models.hpserec",
    "SASRec": "seqrec.models.sasrec",
}


def __getattr__(name: str) -> Any:
    """The torch-backed classes, imported when first asked for."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)


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


__all__ = [
    "ARCHS",
    "BERT4Rec",
    "ExpertOutput",
    "HPSERec",
    "ModelConfig",
    "SASRec",
    "SequentialRecommender",
    "build_model",
]
