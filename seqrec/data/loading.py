"""One entry point from a dataset name or file path to a `SequenceDataset` with provenance."""

from __future__ import annotations

import os
from pathlib import Path

from seqrec.data.dataset import SequenceDataset, build_dataset
from seqrec.data.fetch import fetch_ml100k
from seqrec.data.processed import load_processed, processed_key, store_processed
from seqrec.data.readers import DataFormatError, detect_format, read_interactions
from seqrec.data.synthetic import generate_synthetic
from seqrec.hashing import file_sha256

SYNTHETIC_USERS = 1000
SYNTHETIC_ITEMS = 1000
SYNTHETIC_SEED = 0
ACCEPTED = "'ml-100k', 'synthetic', 'synthetic:USERS:ITEMS' or the path of an interaction file"


def load_dataset(
    name_or_path: str, fmt: str | None = None, min_user: int = 5, min_item: int = 5
) -> SequenceDataset:
    """Load, k-core filter and densify a dataset, recording its sha256 and origin.

    `fmt` applies to file paths only (see `read_interactions`); names fix their own format.
    Files are processed once: later loads of the same bytes with the same settings come from
    `seqrec.data.processed` (synthetic data is generated every time).
    """
    if name_or_path == "ml-100k":
        fetched = fetch_ml100k()
        return _load_file(
            fetched.path, fetched.fmt, "ml-100k", min_user, min_item, fetched.sha256, fetched.origin
        )
    if name_or_path == "synthetic" or name_or_path.startswith("synthetic:"):
        n_users, n_items = _synthetic_size(name_or_path)
        frame = generate_synthetic(n_users, n_items, seed=SYNTHETIC_SEED)
        origin = f"generate_synthetic({n_users}, {n_items}, seed={SYNTHETIC_SEED})"
        return build_dataset(
            frame, f"synthetic:{n_users}:{n_items}", min_user, min_item, origin=origin
        )
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise DataFormatError(_not_loadable(name_or_path, path))
    return _load_file(
        path,
        fmt or detect_format(path),
        path.stem,
        min_user,
        min_item,
        file_sha256(path),
        str(path.resolve()),
    )


def _load_file(
    path: Path, fmt: str, name: str, min_user: int, min_item: int, sha256: str, origin: str
) -> SequenceDataset:
    """The processed dataset of a raw file whose sha256 is known: cached, else built and kept."""
    key = processed_key(sha256, fmt, min_user, min_item)
    cached = load_processed(key, name, sha256, origin)
    if cached is not None:
        return cached
    frame = read_interactions(path, fmt)
    data = build_dataset(frame, name, min_user, min_item, sha256=sha256, origin=origin)
    store_processed(key, data)
    return data


def _not_loadable(name: str, path: Path) -> str:
    """Why `name` is neither a known dataset nor a readable file, as one line: a path that
    is missing is "file not found", not an unknown dataset; a bare word may be either."""
    if path.is_dir():
        return f"{path} is a directory; expected an interaction file"
    if path.suffix or os.sep in name or name.startswith(("~", ".")):
        return f"file not found: {path}"
    return f"unknown dataset {name!r} (and no file of that name): expected {ACCEPTED}"


def _synthetic_size(name: str) -> tuple[int, int]:
    """(users, items) from "synthetic" or "synthetic:USERS:ITEMS"."""
    if name == "synthetic":
        return SYNTHETIC_USERS, SYNTHETIC_ITEMS
    parts = name.split(":")
    if len(parts) != 3 or not all(part.isdigit() and int(part) > 0 for part in parts[1:]):
        raise ValueError(f"bad synthetic dataset {name!r}: expected 'synthetic:USERS:ITEMS'")
    return int(parts[1]), int(parts[2])
