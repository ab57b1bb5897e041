"""On-disk cache of processed datasets: a raw file is read, filtered and densified once.

Reading ML-100k with pandas, k-core filtering and densifying it takes about 0.3 s, which was
most of a fully cached extraction re-run at the time (commit 469084f); loading the result from
here takes a few milliseconds.

An entry is found only by what determines its content: the raw file's sha256, its format, the
k-core bounds, and a hash of the source of the modules that build it (readers, dataset,
sequences) with the pandas and numpy versions. So a raw file that changed, other settings, or
a change to the processing code each give another entry; nothing has to be bumped by hand.

Entries are `.npz` files (plain arrays, read with `allow_pickle=False`: loading one runs no
code) written atomically (`write_atomic`), so readers never see half an entry. The key's JSON is
stored inside the entry and compared on load; an unreadable or mismatching entry is a miss and
is written again. Origin and name are not cached: the caller knows them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np

from seqrec.data import dataset as dataset_module
from seqrec.data import readers as readers_module
from seqrec.data import sequences as sequences_module
from seqrec.data.dataset import SequenceDataset
from seqrec.data.fetch import cache_dir, write_atomic
from seqrec.data.sequences import Sequences

log = logging.getLogger("seqrec.data.processed")
_ARRAYS = ("items", "offsets", "item_ids", "user_ids")
_BUILDERS = (readers_module, dataset_module, sequences_module)


def processed_dir() -> Path:
    """Where processed datasets are kept: `<cache_dir()>/processed`."""
    return cache_dir() / "processed"


def processed_key(raw_sha256: str, fmt: str, min_user: int, min_item: int) -> str:
    """Canonical JSON of everything that determines a processed dataset's arrays."""
    return json.dumps(
        {
            "raw_sha256": raw_sha256,
            "format": fmt,
            "min_user": min_user,
            "min_item": min_item,
            "code": _builder_code_sha256(),
            "pandas": importlib.metadata.version("pandas"),  # not imported for a cached load
            "numpy": np.__version__,
        },
        sort_keys=True,
    )


def _builder_code_sha256() -> str:
    """sha256 of the source files that turn a raw file into a `SequenceDataset`."""
    digest = hashlib.sha256()
    for module in _BUILDERS:
        digest.update(Path(module.__file__ or "").read_bytes())
    return digest.hexdigest()


def _entry_path(key: str) -> Path:
    return processed_dir() / f"{hashlib.sha256(key.encode()).hexdigest()}.npz"


def load_processed(
    key: str, name: str, sha256: str | None, origin: str | None
) -> SequenceDataset | None:
    """The dataset stored under `key`, or None when there is none or it cannot be used."""
    path = _entry_path(key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as entry:
            if str(entry["key"]) != key:
                return None
            arrays = {field: entry[field] for field in _ARRAYS}
        sequences = Sequences(arrays["items"], arrays["offsets"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        log.warning("ignoring the unreadable processed dataset %s: %s", path, error)
        return None
    return SequenceDataset(
        name=name,
        sequences=sequences,
        item_ids=arrays["item_ids"],
        user_ids=arrays["user_ids"],
        sha256=sha256,
        origin=origin,
    )


def store_processed(key: str, data: SequenceDataset) -> None:
    """Keep `data` under `key`; a cache that cannot be written is logged, never fatal."""
    path = _entry_path(key)
    arrays = {
        "key": np.asarray(key),
        "items": data.sequences.items,
        "offsets": data.sequences.offsets,
        "item_ids": np.asarray(data.item_ids, dtype=str),
        "user_ids": np.asarray(data.user_ids, dtype=str),
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, buffer.getvalue())
    except OSError as error:
        log.warning("could not keep the processed dataset in %s: %s", path.parent, error)
