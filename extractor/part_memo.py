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
them as cached) and the sha256 of the Parquet bytes, then those bytes. A value whose bytes do
not match their sha256 (a flipped bit in the cache would otherwise be copied to disk and given
a fresh, matching checksum there), or that does not read back as a part of the chunk's rows,
is treated as a miss, and the chunk is rebuilt from its answers. So is a value of the format
before the checksum (`RMP1`): rebuilding costs no payment, only the answers' cache reads, and
the rebuilt part is remembered again in this format.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from extractor.probeset import SCHEMA
from seqrec.hashing import bytes_sha256

PART_KEY_VERSION = "recmimic-part-v1"
_HEADER = struct.Struct("<4sQ32s")  # magic, distinct histories looked up, sha256 of the part
_MAGIC = b"RMP2"


@dataclass(frozen=True)
class RememberedPart:
    """A chunk's part as written, and what its summary counts."""

    lookups: int  # distinct histories the chunk looked up, all answered
    data: bytes  # the Parquet file
    # Of `data`, derived from it (so not compared); computed by `pack` when not given.
    sha256: str | None = field(default=None, compare=False)

    @property
    def digest(self) -> str:
        """Hex sha256 of `data`: the given one, or computed now."""
        return self.sha256 if self.sha256 is not None else bytes_sha256(self.data)


def part_key(run_info: Mapping[str, Any], query_ids: Sequence[int], texts: Sequence[str]) -> str:
    """Hex sha256 naming the part of these queries (`texts`: their full views' `history_json`)
    written under these settings."""
    head = json.dumps([PART_KEY_VERSION, str(SCHEMA), run_info], sort_keys=True)
    digest = hashlib.sha256(head.encode())
    digest.update(np.asarray(query_ids, dtype=np.int64).tobytes())
    digest.update("\n".join(texts).encode())  # canonical JSON holds no raw newline
    return digest.hexdigest()


def pack(part: RememberedPart) -> bytes:
    """The cache value of a part: header (with the part's sha256), then its bytes."""
    return _HEADER.pack(_MAGIC, part.lookups, bytes.fromhex(part.digest)) + part.data


def unpack(value: bytes, rows: int) -> RememberedPart | None:
    """The part in a cached value, or None unless it holds a part of `rows` rows whose bytes
    match their sha256. The part comes back with that sha256, checked, for the writer to
    reuse (`ProbeSetWriter.add_part`)."""
    if len(value) <= _HEADER.size:
        return None
    magic, lookups, digest = _HEADER.unpack_from(value)
    if magic != _MAGIC:
        return None
    data = value[_HEADER.size :]
    sha256 = bytes_sha256(data)
    if sha256 != digest.hex():
        return None
    try:
        readable = pq.read_metadata(pa.BufferReader(data)).num_rows == rows
    except (pa.ArrowException, OSError):
        readable = False
    return RememberedPart(lookups, data, sha256) if readable else None
