"""Model artifacts: a directory with `model.safetensors` and `config.json`, never a pickle.

`config.json` holds everything needed to rebuild and trust the model: the architecture, the
catalogue (raw item id of each dense index), where the training data came from, and metrics.
Loading reads tensors with safetensors and JSON with the json module, so it cannot run code.
Each file is written with its sha256 beside it (`model.safetensors.sha256`, `config.json.sha256`:
`seqrec.hashing`) and loading checks the very bytes it parses against it, so a damaged artifact
is refused by name (`ArtifactChecksumError`) rather than served; an artifact written before
checksums loads unverified. The weights' sha256 is also the model's version.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from seqrec.artifact_files import (
    CONFIG,
    WEIGHTS,
    ArtifactChecksumError,
    ArtifactError,
    artifact_directory,
)
from seqrec.hashing import read_checked, write_checked
from seqrec.models import ModelConfig, build_model
from seqrec.models.base import SequentialRecommender

FORMAT_VERSION = 1


@dataclass
class ArtifactInfo:
    """What travels with the weights."""

    model: ModelConfig
    item_ids: list[str]
    dataset: dict[str, Any] = field(default_factory=dict)  # name, sha256, origin
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)


@dataclass
class Artifact:
    model: SequentialRecommender
    info: ArtifactInfo
    version: str  # sha256 of the weights file: changes whenever the model does


def save_artifact(directory: str | Path, model: SequentialRecommender, info: ArtifactInfo) -> str:
    """Write weights and config; returns the model version (sha256 of the weights file)."""
    if len(info.item_ids) != model.n_items:
        raise ValueError(f"{len(info.item_ids)} item ids for a model of {model.n_items} items")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    version = write_checked(directory / WEIGHTS, save(state))
    payload = {"format_version": FORMAT_VERSION, **asdict(info)}
    write_checked(directory / CONFIG, json.dumps(payload, indent=2).encode())
    return version


def load_artifact(directory: str | Path, device: str | torch.device = "cpu") -> Artifact:
    """The model and its info; `ArtifactError` (`ArtifactChecksumError` for a damaged file)
    when the directory cannot be trusted to hold one."""
    directory = artifact_directory(directory)
    weights, config = directory / WEIGHTS, directory / CONFIG
    config_bytes = read_checked(config, ArtifactChecksumError, "artifact file").data
    try:
        payload = json.loads(config_bytes)
        version = payload.pop("format_version")
        if version != FORMAT_VERSION:
            raise ArtifactError(f"{config}: unsupported format_version {version}")
        info = ArtifactInfo(**{**payload, "model": ModelConfig(**payload["model"])})
        if len(info.item_ids) != info.model.n_items or len(set(info.item_ids)) != len(
            info.item_ids
        ):
            raise ArtifactError(f"{config}: item_ids must be {info.model.n_items} distinct ids")
        model = build_model(info.model)
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{config}: malformed artifact config ({exc})") from exc
    checked = read_checked(weights, ArtifactChecksumError, "artifact file")
    try:
        model.load_state_dict(load(checked.data))
    except (OSError, RuntimeError, SafetensorError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"{weights}: cannot load the weights ({reason})") from exc
    return Artifact(model=model.to(device).eval(), info=info, version=checked.sha256)
