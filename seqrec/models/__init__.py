"""Sequential recommendation backbones behind one interface: `logits(seqs)`, `user_repr(seqs)`."""

from seqrec.models.base import ModelConfig, SequentialRecommender
from seqrec.models.bert4rec import BERT4Rec
from seqrec.models.sasrec import SASRec

_ARCHS: dict[str, type[SequentialRecommender]] = {"sasrec": SASRec, "bert4rec": BERT4Rec}


def build_model(config: ModelConfig) -> SequentialRecommender:
    if config.arch not in _ARCHS:
        raise ValueError(f"unknown arch {config.arch!r}; choose one of {sorted(_ARCHS)}")
    if config.n_items < 1:
        raise ValueError("config.n_items must be set to the catalogue size")
    return _ARCHS[config.arch](config)


__all__ = ["BERT4Rec", "ModelConfig", "SASRec", "SequentialRecommender", "build_model"]
