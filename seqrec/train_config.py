"""The supervised trainer's settings, importable without torch.

The command line builds and checks these, and shows their defaults in `--help`, before it
imports torch (as `seqrec.models.config` does for the backbone); `seqrec.train` trains with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass
class TrainConfig:
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    max_epochs: int = 200
    patience: int = 10  # epochs without a better validation NDCG@10 before stopping
    min_window: int = 2  # shortest window (in items, input + target) worth training on
    window_ends: Literal["tiled", "random"] = "tiled"  # see `seqrec.train`
    seed: int = 0
    device: str = "auto"  # "auto" = cuda when available, else cpu
    progress: bool = True

    @classmethod
    def for_arch(cls, arch: str, **given: Any) -> TrainConfig:
        """The defaults for backbone `arch` (ARCH_DEFAULTS), with the given fields on top."""
        return cls(**{**ARCH_DEFAULTS.get(arch, {}), **given})


# Where a backbone trains best away from the TrainConfig defaults. BERT4Rec's cloze loss has only
# about mask_ratio of each window's items as targets, plus its last one: with the same fixed
# windows every epoch it reached 75% of SASRec's NDCG@10 on ML-100k. Windows ending at random
# items, and the longer patience its slow climb needs (100+ epochs), are what closed that gap
# (docs/benchmarks.md, "Teacher quality").
ARCH_DEFAULTS: dict[str, dict[str, Any]] = {"bert4rec": {"window_ends": "random", "patience": 20}}
