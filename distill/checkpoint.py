"""Training checkpoints a restarted worker resumes from: safetensors + JSON, never a pickle.

A checkpoint is a directory holding `state.safetensors` (model weights, the best weights so far,
the optimizer's moment tensors, the random generator's state) and `state.json` (epoch counters,
scores, the optimizer's hyper-parameters, and a fingerprint of the run's settings so a resumed
run never continues someone else's training). It is written to a temp directory and renamed,
so a kill leaves the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

TENSORS = "state.safetensors"
META = "state.json"


def save_checkpoint(
    directory: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> None:
    temp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    save_file({name: t.detach().cpu().contiguous() for name, t in tensors.items()}, temp / TENSORS)
    (temp / META).write_text(json.dumps(meta))
    old = directory.with_name(f".{directory.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        os.replace(directory, old)
    os.replace(temp, directory)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The checkpoint in `directory`, or None when there is none (or only a half-written one)."""
    if not (directory / TENSORS).is_file() or not (directory / META).is_file():
        old = directory.with_name(f".{directory.name}.old")
        return load_checkpoint(old) if old.is_dir() and old != directory else None
    return load_file(directory / TENSORS), json.loads((directory / META).read_text())


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
