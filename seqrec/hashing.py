"""Content hashes: datasets and model weights are identified by the sha256 of their bytes.

Files recmimic reads back (probe-set parts, training checkpoints, model artifacts) are written
with their checksum and checked when read, so that a damaged file is refused by name rather
than trained or served on: one flipped bit in a Parquet part read back silently as another
item id in 56 of 60 tries.

The checksum lives in a sidecar beside its file, `<name>.sha256`, one line in `sha256sum`'s
format (`sha256sum -c` checks it by hand). One mechanism serves all three places, since each
adds files its own way: a probe set gains a part at a time, where a manifest per directory
would be rewritten, and fsync'd, for every part; an artifact or checkpoint has two files.
The sidecar is written after its file (through a temp file and a rename, as the file is), so
a kill between the two leaves a whole file with no checksum, never a checksum of nothing.

A file without a sidecar is read unverified: it was written by a version before checksums
(or a kill came between the two renames). It is not checksummed on first read: a reader may
not own the directory (a probe set read while its extraction runs, a read-only copy), and a
checksum taken now would vouch for whatever the bytes have become since they were written.
A sidecar whose file is missing is an error: the file was lost, not never written.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

CHECKSUM_SUFFIX = ".sha256"
_DIGEST = re.compile(r"^([0-9a-f]{64})[ \t]")


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks so large files need no extra memory."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bytes_sha256(data: bytes) -> str:
    """Hex sha256 of bytes in memory (hashlib releases the GIL for them: fine in a thread)."""
    return hashlib.sha256(data).hexdigest()


def checksum_path(path: str | Path) -> Path:
    """Where the checksum of the file at `path` is kept: `<name>.sha256` beside it."""
    path = Path(path)
    return path.with_name(path.name + CHECKSUM_SUFFIX)


def write_atomically(path: Path, data: bytes, fsync: bool = False) -> None:
    """`data` to a hidden temp file beside `path`, renamed over it: readers see the old file
    or the new one, whole. `fsync` makes it durable before the rename (the caller then syncs
    the directory)."""
    temp = path.with_name(f".{path.name}.tmp")
    with temp.open("wb") as handle:
        handle.write(data)
        if fsync:
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(temp, path)


def write_checksum(path: str | Path, digest: str, fsync: bool = False) -> None:
    """Write `digest` as the checksum of the file at `path` (atomically, like the file)."""
    path = Path(path)
    line = f"{digest}  {path.name}\n".encode()
    write_atomically(checksum_path(path), line, fsync)


def write_checked(
    path: str | Path, data: bytes, fsync: bool = False, sha256: str | None = None
) -> str:
    """Write `data` to `path`, then its checksum; returns the hex sha256.

    Both go through a temp file and a rename, the data first (see the module docstring).
    `sha256` is the data's digest when the caller already has it checked (it is not hashed
    again); `fsync` syncs each file before its rename, leaving the directory to the caller.
    """
    path = Path(path)
    digest = sha256 if sha256 is not None else bytes_sha256(data)
    write_atomically(path, data, fsync)
    write_checksum(path, digest, fsync)
    return digest


def read_checksum(path: str | Path, error: type[Exception]) -> str | None:
    """The checksum written with the file at `path`, None when there is none (an older
    version's file); `error` when the sidecar does not hold one."""
    sidecar = checksum_path(path)
    try:
        text = sidecar.read_bytes()
    except FileNotFoundError:
        return None
    match = _DIGEST.match(text.decode("ascii", errors="replace"))
    if match is None:
        raise error(f"{sidecar} is damaged: it holds no sha256 checksum")
    return match.group(1)


@dataclass(frozen=True)
class Checked:
    """A file's bytes as read, checked against the checksum written with them."""

    data: bytes
    sha256: str  # of `data`, computed on reading
    verified: bool  # False: no checksum was written with the file, so it is taken as is


def read_checked(path: str | Path, error: type[Exception], what: str = "file") -> Checked:
    """The bytes of the file at `path`, refused with `error` (naming it as `what` and its path)
    when they differ from its checksum or when it is missing while its checksum is there.

    The bytes are hashed once and the caller parses these same bytes, so what is checked is
    what is used. A missing file without a checksum raises FileNotFoundError as usual.
    """
    path = Path(path)
    expected = read_checksum(path, error)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if expected is None:
            raise
        raise error(
            f"{what} {path} is missing, but its checksum {checksum_path(path).name} is there"
        ) from None
    actual = bytes_sha256(data)
    if expected is not None and actual != expected:
        raise error(
            f"{what} {path} is damaged: its sha256 is {actual}, "
            f"but {checksum_path(path).name} says {expected}"
        )
    return Checked(data=data, sha256=actual, verified=expected is not None)


def missing_checked(path: str | Path) -> bool:
    """Whether the file at `path` is missing while its checksum is there: a file that was
    written and lost since, which callers that tolerate a missing file must refuse."""
    path = Path(path)
    return not path.exists() and checksum_path(path).is_file()
