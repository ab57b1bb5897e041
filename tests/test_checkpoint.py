"""Training checkpoints are written whole with their checksums, and a damaged one is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distill.checkpoint import (
    META,
    TENSORS,
    CheckpointChecksumError,
    load_checkpoint,
    save_checkpoint,
)
from seqrec.hashing import CHECKSUM_SUFFIX, file_sha256

META_VALUES = {"epoch": 3, "best": {"agr10": 0.5}, "fingerprint": "abc"}


def saved(tmp_path: Path) -> Path:
    directory = tmp_path / "checkpoint"
    tensors = {"model.w": torch.arange(12, dtype=torch.float32).reshape(3, 4)}
    save_checkpoint(directory, {**tensors, "generator": torch.Generator().get_state()}, META_VALUES)
    return directory


def test_a_checkpoint_reads_back_and_each_file_has_its_checksum(tmp_path: Path) -> None:
    directory = saved(tmp_path)
    tensors, meta = load_checkpoint(directory)
    assert torch.equal(tensors["model.w"], torch.arange(12.0).reshape(3, 4)) and meta == META_VALUES
    for name in (TENSORS, META):
        line = (directory / f"{name}{CHECKSUM_SUFFIX}").read_text()
        assert line == f"{file_sha256(directory / name)}  {name}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]  # no temp left


@pytest.mark.parametrize("name", [TENSORS, META])
def test_a_damaged_checkpoint_file_is_refused_by_name(tmp_path: Path, name: str) -> None:
    """Not resumed from, and not silently dropped either: training would start over or go on
    from weights or counters that are not the ones saved."""
    directory = saved(tmp_path)
    path = directory / name
    data = bytearray(path.read_bytes())
    offset = data.find(b'"epoch": 3') + 9 if name == META else len(data) - 2
    data[offset] ^= 0x01  # epoch 3 becomes 2, or a tensor's last byte: both still parse
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointChecksumError, match=f"{name} is damaged"):
        load_checkpoint(directory)
    path.unlink()
    with pytest.raises(CheckpointChecksumError, match=f"{name} is missing"):
        load_checkpoint(directory)
    assert issubclass(CheckpointChecksumError, ValueError)  # the CLI's one-line error


def test_a_checkpoint_written_before_checksums_loads_unverified(tmp_path: Path) -> None:
    directory = saved(tmp_path)
    for sidecar in directory.glob(f"*{CHECKSUM_SUFFIX}"):
        sidecar.unlink()
    assert load_checkpoint(directory)[1] == META_VALUES
    (directory / TENSORS).unlink()  # half of an old one, with no checksum: none to resume
    assert load_checkpoint(directory) is None
