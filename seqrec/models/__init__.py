"""Sequential recommendation backbones behind one interface: `logits(seqs)`, `user_repr(seqs)`."""

from seqrec.models.base import ModelConfig, SequentialRecommender
from seqrec.models.bert4rec import BERT4Rec
from seqrec.models.hpserec import ExpertOutput, HPSERec
from seqrec.models.sasrec import SASRec

_ARCHS: dict[str, type[SequentialRecommender]] = {"sasrec": SASRec, "bert4rec": BERT4Rec}


def build_model(config: ModelConfig) -> SequentialRecommender:
    """The backbone `config.arch`, or HPSERec experts on it when `config.experts` is set."""
    if config.arch not in _ARCHS:
        raise ValueError(f"unknown arch {config.arch!r}; choose one of {sorted(_ARCHS)}")
    if config.n_items < 1:
        raise ValueError("config.n_items must be set to the catalogue size")
    if config.experts < 0 or config.experts == 1:
        raise ValueError(f"experts must be 0 (plain backbone) or at least 2, got {config.experts}")
    if config.experts:
        return HPSERec(config)
    return _ARCHS[config.arch](config)


__all__ = [
    "BERT4Rec",
    "ExpertOutput",
    "HPSERec",
    "ModelConfig",
    "SASRec",
    "SequentialRecommender",
    "build_model",
]
