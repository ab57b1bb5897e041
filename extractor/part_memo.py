"""Whole probe-set parts kept in the answer cache, so that an extraction repeated chunk for chunk
copies its parts instead of rebuilding each one from its answers.

Rebuilding a part means reading every answer from the cache, splitting its JSON into Arrow and
encoding Parquet again. A fully cached re-run of the bench's 15,088 queries (`bench/extract.py`,
scales 1) took 0.31 s of wall time and 0.42 s of CPU that way, and 0.12 s of both copying its
15 parts (medians of 7 runs alternating the two builds, 2026-12-03). The cache grows by the
parts' size, a third of the answers' (10.8 to 14.3 MB there).

A seeded chunk's part is remembered when the chunk was fresh (no query of it on disk before),
every query was answered under the run's model tag, and it was written as a part of its own.
The key hashes everything the part's bytes follow from: the probe-set schema, the run's
settings (`run_info`: endpoint, model tag, k, scales, source), the chunk's query ids and their
histories' canonical JSON. The answers follow from those too, as their cache keys do. The
value is a short header, how many distinct histories the chunk looked up (the summary counts
them as cached), then the Parquet bytes. A value that does not read back as a part of the
chunk's rows is treated as a miss, and the chunk is rebuilt from its answers.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from extractor.probeset import SCHEMA

PART_KEY_VERSION = "recmimic-part-v1"
_HEADER = struct.Struct("<4sQ")  # magic, distinct histories looked up
_MAGIC = b"RMP1"


@dataclass(frozen=True)
class RememberedPart:
    """A chunk's part as written, and what its summary counts."""

    lookups: int  # distinct histories the chunk looked up, all answered
    data: bytes  # the Parquet file


def part_key(run_info: Mapping[str, Any], query_ids: Sequence[int], texts: Sequence[str]) -> str:
    """Hex sha256 naming the part of these queries (`texts`: their full views' `history_json`)
    written under these settings."""
    head = json.dumps([PART_KEY_VERSION, str(SCHEMA), run_info], sort_keys=True)
    digest = hashlib.sha256(head.encode())
    digest.update(np.asarray(query_ids, dtype=np.int64).tobytes())
    digest.update("\n".join(texts).encode())  # canonical JSON holds no raw newline
    return digest.hexdigest()


def pack(part: RememberedPart) -> bytes:
    return _HEADER.pack(_MAGIC, part.lookups) + part.data


def unpack(value: bytes, rows: int) -> RememberedPart | None:
    """The part in a cached value, or None unless it holds a readable part of `rows` rows."""
    if len(value) <= _HEADER.size:
        return None
    magic, lookups = _HEADER.unpack_from(value)
    data = value[_HEADER.size :]
    try:
        readable = magic == _MAGIC and pq.read_metadata(pa.BufferReader(data)).num_rows == rows
    except (pa.ArrowException, OSError):
        readable = False
    return RememberedPart(lookups, data) if readable else None
