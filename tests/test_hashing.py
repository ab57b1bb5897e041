"""The checksum beside a file: written after it, checked on every read, optional for old files."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from seqrec.hashing import checksum_path, read_checked, write_checked


class Damaged(ValueError):
    """Stands for a module's own error class."""


def test_a_file_is_written_with_a_checksum_sha256sum_can_check(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    digest = write_checked(path, b"payload")
    assert digest == hashlib.sha256(b"payload").hexdigest()
    assert checksum_path(path).read_text() == f"{digest}  data.bin\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin", "data.bin.sha256"]
    checked = read_checked(path, Damaged)
    assert (checked.data, checked.sha256, checked.verified) == (b"payload", digest, True)
    if shutil.which("sha256sum"):  # checkable by hand, with coreutils
        done = subprocess.run(["sha256sum", "-c", checksum_path(path).name], cwd=tmp_path)
        assert done.returncode == 0


def test_damage_or_loss_is_the_callers_error_and_no_checksum_is_unverified(
    tmp_path: Path,
) -> None:
    path = tmp_path / "data.bin"
    write_checked(path, b"payload")
    path.write_bytes(b"paylaod")
    with pytest.raises(Damaged, match=r"thing .*data\.bin is damaged"):
        read_checked(path, Damaged, "thing")
    path.unlink()
    with pytest.raises(Damaged, match=r"data\.bin is missing, but its checksum"):
        read_checked(path, Damaged)
    checksum_path(path).unlink()
    with pytest.raises(FileNotFoundError):
        read_checked(path, Damaged)
    path.write_bytes(b"older")  # written before checksums
    assert read_checked(path, Damaged).verified is False
