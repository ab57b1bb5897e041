"""Remembered parts: a key for everything a part's bytes follow from, and values checked whole."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from extractor.part_memo import RememberedPart, pack, part_key, unpack
from extractor.probeset import probe_table

INFO = {"endpoint": "http://t", "model_tag": "v1", "k": 10, "scales": [1.0, 0.5], "seed": 0}
TEXTS = ['["1","2"]', '["1","2","3"]']


def parquet_of(rows: int) -> bytes:
    ids = list(range(rows))
    histories = [["1"]] * rows
    table = probe_table(ids, histories, [["2"]] * rows, [None] * rows, [], np.zeros((rows, 0)), [])
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def test_the_key_changes_with_every_input_and_not_with_dict_order() -> None:
    base = part_key(INFO, [0, 1], TEXTS)
    variants = [
        part_key({**INFO, "model_tag": "v2"}, [0, 1], TEXTS),
        part_key({**INFO, "k": 5}, [0, 1], TEXTS),
        part_key({**INFO, "scales": [1.0]}, [0, 1], TEXTS),
        part_key({**INFO, "seed": 1}, [0, 1], TEXTS),
        part_key(INFO, [0, 2], TEXTS),
        part_key(INFO, [0, 1], ['["1","2"]', '["1","2","4"]']),
        part_key(INFO, [0, 1], ['["1","2"]["1","2","3"]']),  # the same characters, one query
    ]
    assert len({base, *variants}) == len(variants) + 1
    assert part_key(dict(reversed(INFO.items())), [0, 1], TEXTS) == base


def test_a_packed_part_unpacks_only_whole_and_with_its_rows() -> None:
    data = parquet_of(3)
    value = pack(RememberedPart(lookups=5, data=data))
    assert unpack(value, rows=3) == RememberedPart(5, data)
    assert unpack(value, rows=4) is None  # another chunk's part
    assert unpack(value[:-10], rows=3) is None  # cut short
    assert unpack(b"RMP1" + value[4:], rows=3) is None  # the format before the checksum
    assert unpack(value[:44], rows=3) is None  # a header alone
    assert unpack(b"", rows=3) is None


def test_a_part_damaged_in_the_cache_is_a_miss_wherever_the_bit_flips() -> None:
    """Copied as is, a damaged part would be written with a checksum of its damaged bytes;
    the digest kept with it in the cache catches it first, so the chunk is rebuilt."""
    data = parquet_of(3)
    value = pack(RememberedPart(lookups=5, data=data))
    assert unpack(value, rows=3).sha256 == hashlib.sha256(data).hexdigest()  # for the writer
    header = len(value) - len(data)
    for offset in [*range(header - 32, header), *range(header, len(value), 97)]:
        damaged = bytearray(value)
        damaged[offset] ^= 0x10
        assert unpack(bytes(damaged), rows=3) is None, offset
