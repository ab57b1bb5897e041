"""Training checkpoints a restarted worker resumes from: safetensors + JSON, never a pickle.

A checkpoint is a directory holding `state.safetensors` (model weights, the best weights so far,
the optimizer's moment tensors, the random generator's state) and `state.json` (epoch counters,
scores, the optimizer's hyper-parameters, and a fingerprint of the run's settings so a resumed
run never continues someone else's training). It is written to a temp directory and renamed,
so a kill leaves the previous checkpoint or the new one, never half of one. Each file is written
with its sha256 beside it (`state.safetensors.sha256`, `state.json.sha256`: `seqrec.hashing`)
and checked when loaded, so a damaged checkpoint stops the run by name (`CheckpointChecksumError`)
instead of resuming training from wrong weights or counters; a checkpoint written before
checksums loads unverified.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, save

from seqrec.hashing import missing_checked, read_checked, write_checked

TENSORS = "state.safetensors"
META = "state.json"


class CheckpointChecksumError(ValueError):
    """A checkpoint file differs from the checksum written with it, or is missing while its
    checksum is there. A ValueError, so the command line and the worker report it as bad
    input (one line), like the other damaged inputs; deleting the checkpoint directory
    starts the training over."""


def save_checkpoint(
    directory: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    """Write the checkpoint whole (temp directory, then renames), each file with its sha256."""
    temp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    state = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    write_checked(temp / TENSORS, save(state))
    write_checked(temp / META, json.dumps(meta).encode())
    old = directory.with_name(f".{directory.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(temp, directory)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The checkpoint in `directory`, or None when there is none (or only a half-written one).

    `CheckpointChecksumError` when a file differs from its checksum, or is missing while its
    checksum is there (the checkpoint was whole once: a file was lost, not half-written).
    """
    for name in (TENSORS, META):
        if missing_checked(directory / name):
            raise CheckpointChecksumError(
                f"checkpoint file {directory / name} is missing, but its checksum is there; "
                f"delete {directory} to train from the start"
            )
    if not (directory / TENSORS).is_file() or not (directory / META).is_file():
        old = directory.with_name(f".{directory.name}.old")
        return load_checkpoint(old) if old.is_dir() and old != directory else None
    tensors = read_checked(directory / TENSORS, CheckpointChecksumError, "checkpoint file")
    meta = read_checked(directory / META, CheckpointChecksumError, "checkpoint file")
    return load(tensors.data), json.loads(meta.data)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state split into tensors (for safetensors) and the JSON-able rest."""
    state = optimizer.state_dict()
    tensors = {
        f"optimizer.{index}.{name}": value
        for index, slots in state["state"].items()
        for name, value in slots.items()
    }
    return tensors, {"param_groups": state["param_groups"]}


def restore_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict
) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
