"""A tiny untrained SASRec artifact for tests that need a real teacher behind a real server."""

from pathlib import Path

import torch

from seqrec.artifacts import ArtifactInfo, save_artifact
from seqrec.models import ModelConfig, build_model


def save_tiny_teacher(directory: Path, item_ids: list[str], max_len: int = 20) -> Path:
    """Seeded, so every test module gets the same weights for the same catalogue."""
    torch.manual_seed(0)
    config = ModelConfig(
        arch="sasrec", n_items=len(item_ids), max_len=max_len, hidden=16, n_heads=2
    )
    save_artifact(directory, build_model(config), ArtifactInfo(model=config, item_ids=item_ids))
    return directory
