"""Obtain MovieLens-100k on a fresh machine without a browser, and cache it with its sha256.

GroupLens is tried first; when it is unreachable the copy inside the RecBole wheel on PyPI is
used (downloaded with pip, read with zipfile, never installed). The cache records where the file
came from so that every result can say which bytes it was computed on.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from seqrec.hashing import file_sha256

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
GROUPLENS_MEMBER = "ml-100k/u.data"
RECBOLE_REQUIREMENT = "recbole==1.2.1"
RECBOLE_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
RECBOLE_ORIGIN = f"pypi:{RECBOLE_REQUIREMENT} wheel"
PIP_TIMEOUT_S = 300.0
SOURCE_FILE = "source.json"
_DOWNLOAD_ERRORS = (
    OSError,  # includes URLError, timeouts and our own pip failures
    http.client.HTTPException,
    zipfile.BadZipFile,
    KeyError,  # the expected member is not in the archive
    subprocess.SubprocessError,
)


class FetchError(RuntimeError):
    """A dataset could not be obtained, or its cached copy does not match its recorded hash."""


@dataclass(frozen=True)
class FetchedFile:
    """A cached raw file, its sha256, where it came from, and the reader format it needs."""

    path: Path
    sha256: str
    origin: str
    fmt: str


def cache_dir() -> Path:
    """Cache root: $RECMIMIC_CACHE, else $XDG_CACHE_HOME/recmimic, else ~/.cache/recmimic."""
    if os.environ.get("RECMIMIC_CACHE"):
        return Path(os.environ["RECMIMIC_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "recmimic"


def dataset_cache_dir(name: str) -> Path:
    """Where the raw files of dataset `name` are cached."""
    return cache_dir() / "datasets" / name


def fetch_ml100k(cache_dir: Path | None = None, timeout: float = 5.0) -> FetchedFile:
    """MovieLens-100k from the cache, else GroupLens, else the RecBole wheel on PyPI.

    `cache_dir` is the directory holding the file and its `source.json` (default
    `dataset_cache_dir("ml-100k")`); `timeout` bounds each network wait for GroupLens; pip keeps its
    own defaults, since PyPI is the source expected to work.
    """
    directory = Path(cache_dir) if cache_dir is not None else dataset_cache_dir("ml-100k")
    cached = _read_cached(directory)
    if cached is not None:
        return cached
    sources = (
        (GROUPLENS_URL, lambda: _from_grouplens(timeout)),
        (RECBOLE_ORIGIN, _from_recbole_wheel),
    )
    failures = []
    for label, download in sources:
        try:
            name, data, origin, fmt = download()
        except _DOWNLOAD_ERRORS as error:
            failures.append(f"{label}: {' '.join(str(error).split())}")
            continue
        return _store(directory, name, data, origin, fmt)
    raise FetchError("could not fetch ml-100k; tried " + "; ".join(failures))


def _read_cached(directory: Path) -> FetchedFile | None:
    """The cached file when `source.json` and the file both exist; its hash must still match."""
    source = directory / SOURCE_FILE
    if not source.is_file():
        return None
    try:
        record = json.loads(source.read_text(encoding="utf-8"))
        fetched = FetchedFile(
            directory / record["file"], record["sha256"], record["origin"], record["fmt"]
        )
    except (ValueError, KeyError, TypeError) as error:
        raise FetchError(
            f"{source}: unreadable cache record ({error}); delete it to refetch"
        ) from error
    if not fetched.path.is_file():
        return None
    actual = file_sha256(fetched.path)
    if actual != fetched.sha256:
        raise FetchError(
            f"{fetched.path}: sha256 {actual} differs from {fetched.sha256} recorded in {source}; "
            f"delete {directory} to fetch it again"
        )
    return fetched


def _from_grouplens(timeout: float) -> tuple[str, bytes, str, str]:
    with urllib.request.urlopen(GROUPLENS_URL, timeout=timeout) as response:
        archive = response.read()
    data = zipfile.ZipFile(io.BytesIO(archive)).read(GROUPLENS_MEMBER)
    return "u.data", data, GROUPLENS_URL, "ml-100k"


def _from_recbole_wheel() -> tuple[str, bytes, str, str]:
    with tempfile.TemporaryDirectory(prefix="recmimic-pip-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        command += ["--disable-pip-version-check", "--quiet", RECBOLE_REQUIREMENT, "-d", tmp]
        result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        if result.returncode != 0:
            tail = result.stderr.strip().splitlines()[-1:] or ["no output"]
            raise OSError(f"pip exited with {result.returncode}: {tail[0]}")
        wheels = sorted(Path(tmp).glob("recbole-*.whl"))
        if not wheels:
            raise OSError(f"pip downloaded no recbole wheel into {tmp}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = wheel.read(RECBOLE_MEMBER)
    return "ml-100k.inter", data, RECBOLE_ORIGIN, "atomic"


def _store(directory: Path, name: str, data: bytes, origin: str, fmt: str) -> FetchedFile:
    """Write the file, then its source record, each atomically (temp file + rename)."""
    directory.mkdir(parents=True, exist_ok=True)
    fetched = FetchedFile(directory / name, hashlib.sha256(data).hexdigest(), origin, fmt)
    write_atomic(fetched.path, data)
    record = {"file": name, "sha256": fetched.sha256, "origin": origin, "fmt": fmt}
    write_atomic(directory / SOURCE_FILE, json.dumps(record, indent=2).encode())
    return fetched


def write_atomic(path: Path, data: bytes) -> None:
    """Readers never see a half-written file, even if this process dies mid-write."""
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        try:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        except BaseException:
            tmp.close()
            os.unlink(tmp.name)
            raise
    os.chmod(tmp.name, 0o644)  # a cache is shared; mkstemp's 0600 would hide it from others
    os.replace(tmp.name, path)
