"""The probe set: every query's answers on disk, written as they arrive, resumable after a kill.

Layout: one row per query (its full view) with its truncated views in list columns.

| column | type | meaning |
|---|---|---|
| `query_id` | int64 | position of the query in the source's deterministic order |
| `history` | list<string> | the full view, raw catalogue ids, oldest first (scale 1.0) |
| `items` | list<string> | the full view's top-k, best first; null when it failed |
| `status` | string | "answered" or "failed" (of the full view) |
| `error` | string | why the full view failed; null when answered |
| `view_scales` | list<double> | scale r of each truncated view actually probed (1.0 excluded) |
| `view_lengths` | list<int32> | its length, ceil(n*r): the view is `history[-length:]` |
| `view_items` | list<list<string>> | its top-k; a null entry for a view that failed |
| `scores` | list<float32> | the full view's scores, one per id of `items` (see below) |

`scores` is there only in the parts of a run whose API profile names scores
(`extractor.scores`); null where none came. Parts with and without it read as one table.

Why one row per query rather than one per request: the query is the unit that is resumed,
deduplicated and trained on. Its views are written with it, so a query on disk is complete; the
trainer reads target and reliability inputs from one row with no pivot; and views, being
suffixes, are stored as lengths instead of repeating the history.

Writing: rows are buffered and flushed as numbered Parquet parts (`part-00000.parquet`, ...),
each written to a hidden temp file, fsync'd and renamed, so a killed process leaves whole parts
or none. Rows still in the buffer at a kill are lost from the probe set but not from the answer
cache, which the client fills first: a resumed run rebuilds them from the cache without paying.
A writer made with `background=True` writes each part in a thread while its caller goes on
(the extraction run: a part took 30 to 50 ms with its two fsyncs, during which no request was
sent or answered), up to `PARTS_IN_FLIGHT` parts queued (waiting for each part before queueing
the next held a fully cached re-run 0.1 s of its 1 s); parts still queued at a kill are lost
like the buffer. `add_part` writes a table, or a part's bytes, as a part of its own and gives
back its bytes: how a run keeps a chunk's part in the cache and copies it back later
(`extractor.part_memo`).

Checksums: each part's sha256 is written beside it, after it and the same way
(`part-00000.parquet.sha256`: `seqrec.hashing`), and every read checks the part's bytes against
it before parsing those same bytes, so a damaged part is refused by name (`PartChecksumError`)
instead of read back as other ids (one flipped bit: 56 of 60 tries did), and a part lost while
its checksum is there is refused too. A part without one, written before checksums, is read
unverified. Costs, 100,000 rows in 25 parts (51 MB; 2 cores shared with other work, so
timings were noisy): hashing every part takes 40 to 50 ms, which is what checking adds to a
read of the whole set (0.9 to 2.6 s with or without it, 15 runs each; peak memory 550 against
535 MB), and what makes `done_ids`, which parses two columns but must hash every part's bytes,
take 66 ms against 21 ms. Writing the 25 parts took 1.5 to 1.7 s against 1.5 to 1.6 s.
Copying 15 remembered parts (8 MB, background writer) took 176 ms against 116 ms, nearly all of
it the checksum file's own fsync (4 ms a part on this disk; 100 ms without it), kept so that a
power loss cannot leave a synced part beside an empty checksum.

One writer per directory (the run's budget ledger lock already guarantees one live run).
"""

from __future__ import annotations

import json
import os
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from extractor.arrow_build import STRING_LISTS as _IDS
from extractor.arrow_build import numeric, string_lists, strings
from seqrec.hashing import CHECKSUM_SUFFIX, read_checked, write_checked

ANSWERED, FAILED = "answered", "failed"
RUN_INFO_KEY = b"recmimic.run_info"
SCHEMA = pa.schema(
    [
        pa.field("query_id", pa.int64(), nullable=False),
        pa.field("history", _IDS, nullable=False),
        pa.field("items", _IDS),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("view_scales", pa.list_(pa.float64()), nullable=False),
        pa.field("view_lengths", pa.list_(pa.int32()), nullable=False),
        pa.field("view_items", pa.list_(_IDS), nullable=False),
    ]
)
SCORES_FIELD = pa.field("scores", pa.list_(pa.float32()))  # appended when answers have scores
_PART = re.compile(r"^part-(\d+)\.parquet$")
_PART_CHECKSUM = re.compile(r"^(part-\d+\.parquet)" + re.escape(CHECKSUM_SUFFIX) + "$")
_TEMP_PREFIX = ".part-"
PARTS_IN_FLIGHT = 3  # parts queued for the background writer before `flush` waits for one
# Lower bounds of the history-length buckets used by the summary and by reliability fallbacks.
LENGTH_EDGES = (1, 2, 4, 8, 16, 32, 64, 128)
LENGTH_LABELS = tuple(
    str(lo) if hi - lo == 1 else f"{lo}-{hi - 1}"
    for lo, hi in zip(LENGTH_EDGES[:-1], LENGTH_EDGES[1:], strict=True)
) + (f"{LENGTH_EDGES[-1]}+",)


class ProbeSetError(RuntimeError):
    """The probe-set directory cannot be used: a corrupt part or a different run's settings."""


class PartChecksumError(ProbeSetError):
    """A part's bytes differ from the checksum written with them, or a part whose checksum is
    there is missing: nothing may be resumed or trained on it. The message names the part."""


@dataclass(frozen=True)
class ViewAnswer:
    """One truncated view of a query: its scale, its length and its answer (None if it failed)."""

    scale: float
    length: int
    items: Sequence[str] | None


@dataclass(frozen=True)
class ProbeRow:
    """One query: the full view's answer or the reason it failed, plus its truncated views."""

    query_id: int
    history: list[str]
    items: Sequence[str] | None
    error: str | None = None
    views: Sequence[ViewAnswer] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if (self.items is None) == (self.error is None):
            raise ValueError(f"query {self.query_id}: give either items or an error, not both")

    @property
    def status(self) -> str:
        return ANSWERED if self.items is not None else FAILED


def probe_table(
    query_ids: Sequence[int],
    histories: Sequence[Sequence[str]] | pa.Array,
    items: Sequence[Sequence[str] | None],
    errors: Sequence[str | None],
    view_scales: Sequence[float],
    view_lengths: np.ndarray,
    view_items: Sequence[Sequence[str] | None],
    scores: Sequence[Sequence[float] | None] | None = None,
) -> pa.Table:
    """Probe rows as a table, column by column, for queries that all have the same views.

    `view_lengths` is [queries, views] and `view_items` the views' answers query by query
    (row-major), so no per-query object is built: an extraction run writes its chunks this way.
    `histories` may be that column already (`Prefixes.column`). A query has either `items` or
    an error, never both; the caller guarantees it. `scores`, one list (or None) per query,
    adds the `scores` column.
    """
    n, per_query = len(query_ids), len(view_scales)
    offsets = np.arange(n + 1, dtype=np.int32) * per_query
    table = _assemble(
        query_ids,
        histories,
        items,
        errors,
        offsets,
        np.tile(np.asarray(view_scales, dtype=np.float64), n),
        np.asarray(view_lengths, dtype=np.int32).reshape(-1),
        view_items,
    )
    if scores is None:
        return table
    return table.append_column(SCORES_FIELD, pa.array(scores, type=SCORES_FIELD.type))


def _to_table(rows: Sequence[ProbeRow]) -> pa.Table:
    views = [view for row in rows for view in row.views]
    view_offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum([len(row.views) for row in rows], out=view_offsets[1:])
    return _assemble(
        [row.query_id for row in rows],
        [row.history for row in rows],
        [row.items for row in rows],
        [row.error for row in rows],
        view_offsets,
        np.array([view.scale for view in views], dtype=np.float64),
        np.array([view.length for view in views], dtype=np.int32),
        [view.items for view in views],
    )


def _assemble(
    query_ids: Sequence[int],
    histories: Sequence[Sequence[str]],
    items: Sequence[Sequence[str] | None],
    errors: Sequence[str | None],
    view_offsets: np.ndarray,
    view_scales: np.ndarray,
    view_lengths: np.ndarray,
    view_items: Sequence[Sequence[str] | None],
) -> pa.Table:
    """The table of `SCHEMA` from its columns; views are flat, `view_offsets` group them.
    Built from buffers (`extractor.arrow_build`), so that writing a probe set imports no pandas."""
    offsets = numeric(view_offsets, np.int32)
    columns = [
        numeric(query_ids, np.int64),
        _ids_column(histories),
        _ids_column(items),
        strings([ANSWERED if error is None else FAILED for error in errors]),
        strings(errors),
        pa.ListArray.from_arrays(offsets, numeric(view_scales, np.float64)),
        pa.ListArray.from_arrays(offsets, numeric(view_lengths, np.int32)),
        pa.ListArray.from_arrays(offsets, _ids_column(view_items)),
    ]
    return pa.Table.from_arrays(columns, schema=SCHEMA)


def _ids_column(answers: Sequence[Sequence[str] | None] | pa.Array) -> pa.Array:
    """A list<string> array of id lists, answers or histories (None: null), or that array
    itself when given one (the run's histories, `Prefixes.column`). Lists that all carry their
    JSON text (`JsonIds`: cached and paid answers) are parsed by Arrow (`_parse_plain`);
    anything else is converted from the Python strings."""
    if isinstance(answers, pa.Array):
        return answers
    texts = [getattr(items, "text", None) for items in answers]
    if all((text is None) == (items is None) for text, items in zip(texts, answers, strict=True)):
        column = _parse_plain(strings(texts), any_empty="[]" in texts)
        if column is not None:
            return column
    return string_lists(answers)


_PLAIN_IDS = r'^\[("[^"\\]*"(,"[^"\\]*")*)?\]$'  # ["a","b"] or []: no quote or backslash in an id
_EMPTY_TEXT = strings(["[]"])[0]  # scalars made from arrays: `pa.scalar` would import pandas
_EMPTY_IDS = string_lists([[]])[0]


def _parse_plain(texts: pa.StringArray, any_empty: bool) -> pa.Array | None:
    """Compact JSON arrays of ids (`["a","b"]`, as `encode_ids` writes them) as a list<string>
    array, split by Arrow: 3 ms per 1,024 answers of 100 ids, against 12 ms to convert the
    decoded Python lists. None when a text is not in that form (an escape, a space), for the
    caller to decode it the slow way. One regular expression checks the form (it was four
    kernels, 4.3 ms in all), so the split cannot leave a quote in an id. `any_empty` says
    whether some text is `[]`, which the split would read as one empty id; fixing those up
    costs 1 ms per 1,024 answers, so it is done only when there are some."""
    if not pc.all(pc.match_substring_regex(texts, _PLAIN_IDS)).as_py():
        return None  # nulls (failed answers) are skipped
    ids = pc.split_pattern(pc.utf8_slice_codeunits(texts, 2, -2), '","')
    return pc.if_else(pc.equal(texts, _EMPTY_TEXT), _EMPTY_IDS, ids) if any_empty else ids


def _parts(directory: Path) -> list[tuple[int, Path]]:
    """Finished parts in write order; temp files and anything else are not parts.

    A part's checksum without its part means the part was written and lost since (checksums
    are written after their part): `PartChecksumError`, rather than a probe set quietly short.
    """
    found, checksummed = [], []
    for path in directory.iterdir():
        match = _PART.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
        else:
            checksum = _PART_CHECKSUM.match(path.name)
            if checksum:
                checksummed.append(checksum.group(1))
    names = {path.name for _, path in found}
    lost = sorted(name for name in checksummed if name not in names)
    if lost:
        raise PartChecksumError(
            f"probe-set part {directory / lost[0]} is missing, but its checksum is there"
            f"{f' (and {len(lost) - 1} more parts)' if len(lost) > 1 else ''}: restore it, or "
            "delete its .sha256 file to drop its rows (a resumed extraction asks for them again)"
        )
    return sorted(found)


def _read_part(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    """One part, checked against its checksum first: the bytes checked are the bytes parsed.
    A column asked for that the part lacks (`scores` in a part of a run without them) is left
    out: parts that have it give it to the whole table, the others nulls."""
    data = read_checked(path, PartChecksumError, "probe-set part").data
    try:
        if columns is not None and SCORES_FIELD.name in columns:
            held = pq.read_schema(pa.BufferReader(data)).names
            columns = [name for name in columns if name in held or name != SCORES_FIELD.name]
        return pq.read_table(pa.BufferReader(data), columns=columns)
    except (pa.ArrowException, OSError) as exc:
        raise ProbeSetError(f"probe-set part {path} is unreadable: {exc}") from None


def _same_settings(previous: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether a run may add to parts written under `previous` settings: the same in all but a
    model tag one of them did not know (a black box that names its model only in answers
    gives the first run none, a later run the tag it remembered); two known tags must match."""
    if previous.get("model_tag") is None or current.get("model_tag") is None:
        previous, current = dict(previous), dict(current)
        previous.pop("model_tag", None)
        current.pop("model_tag", None)
    return previous == current


def _run_info(schema: pa.Schema) -> dict[str, Any] | None:
    raw = (schema.metadata or {}).get(RUN_INFO_KEY)
    return None if raw is None else json.loads(raw)


def _last_written_order(ids: np.ndarray) -> np.ndarray | None:
    """Rows that keep each query id's last-written row, by query id; None when the rows
    already are (parts are written in query order, so that is the usual case)."""
    if len(ids) < 2 or bool((ids[1:] > ids[:-1]).all()):
        return None
    _, first_from_end = np.unique(ids[::-1], return_index=True)
    return numeric(len(ids) - 1 - first_from_end, np.int64)


def read_probe_set(directory: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """All parts of a probe set, a query written twice kept as written last, sorted by query id.

    The table's schema metadata carries the run's settings (`RUN_INFO_KEY`) when the writer got
    them. `columns` restricts what is parsed (it must include `query_id`); every part is read
    whole to check it against its checksum (`PartChecksumError` names a damaged or lost one).
    """
    parts = [_read_part(path, columns) for _, path in _parts(Path(directory))]
    if not parts:
        empty = pa.Table.from_batches([], schema=SCHEMA)  # empty_table() imports pandas
        return empty if columns is None else empty.select(list(columns))
    metadata = parts[-1].schema.metadata
    table = pa.concat_tables(
        [part.replace_schema_metadata(None) for part in parts], promote_options="default"
    )
    del parts  # the table holds the buffers now: each column below is freed once reordered
    order = _last_written_order(table.column("query_id").to_numpy())
    if order is not None:  # e.g. a run resumed after a budget stop wrote skipped queries last
        schema, columns = table.schema, table.columns
        del table
        for i, column in enumerate(columns):  # one at a time: the whole table at once doubled
            columns[i] = column.take(order)  # the memory of reading a large probe set
        table = pa.Table.from_arrays(columns, schema=schema)
    return table.replace_schema_metadata(metadata)


class ProbeSetWriter:
    """Appends probe rows to a directory as atomically written Parquet parts.

    `run_info` (endpoint, model tag, k, scales, source...) is stored in every part; resuming a
    directory whose parts were written with different settings is refused, since mixing them
    would silently corrupt the training data. Use as a context manager so Ctrl-C flushes.
    With `background`, parts are written by one thread, one at a time, in order; an error
    writing one is raised by a later `flush`, `wait` or `close`.
    """

    def __init__(
        self,
        directory: str | Path,
        rows_per_part: int = 4096,
        run_info: Mapping[str, Any] | None = None,
        background: bool = False,
    ) -> None:
        if rows_per_part < 1:
            raise ValueError("rows_per_part must be >= 1")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rows_per_part = rows_per_part
        # Normalised through JSON so a tuple of scales compares equal to the list read back.
        self.run_info = None if run_info is None else json.loads(json.dumps(dict(run_info)))
        for stale in self.directory.glob(f"{_TEMP_PREFIX}*"):
            stale.unlink()  # a part whose writer died before the rename
        parts = _parts(self.directory)
        self._next_index = parts[-1][0] + 1 if parts else 0
        if parts and self.run_info is not None:
            previous = _run_info(_read_part(parts[-1][1], columns=["query_id"]).schema)
            if previous is not None and not _same_settings(previous, self.run_info):
                raise ProbeSetError(
                    f"{self.directory} holds a probe set from other settings: {previous} "
                    f"(this run: {self.run_info}); use a new directory"
                )
        self._rows: list[ProbeRow] = []  # added one by one, not yet in `_tables`
        self._tables: list[pa.Table] = []
        self._buffered = 0  # rows in both
        self._thread = ThreadPoolExecutor(1, "probeset-writer") if background else None
        self._pending: deque[Future[bytes]] = deque()  # parts in the thread, oldest first

    def done_ids(self, include_failed: bool = True) -> set[int]:
        """Query ids already on disk, so a resumed run skips them.

        With `include_failed=False` only answered queries count, so failures are retried; a retry
        that succeeds is written later and wins when the set is read.
        """
        self.wait()
        table = read_probe_set(self.directory, columns=["query_id", "status"])
        if not include_failed:
            table = table.filter(pc.equal(table.column("status"), ANSWERED))
        return set(table.column("query_id").to_pylist())

    def add(self, row: ProbeRow) -> None:
        """Buffer a row; a full buffer is written as a part (tens of milliseconds, unless in
        the background)."""
        self._rows.append(row)
        self._buffered += 1
        if self._buffered >= self.rows_per_part:
            self.flush()

    def add_many(self, rows: Iterable[ProbeRow]) -> None:
        for row in rows:
            self.add(row)

    def add_table(self, table: pa.Table) -> None:
        """Buffer rows already in a table of `SCHEMA` (see `probe_table`), after those added
        before it; a full buffer is written as a part."""
        if table.num_rows == 0:
            return
        self._collect_rows()
        self._tables.append(table)
        self._buffered += table.num_rows
        if self._buffered >= self.rows_per_part:
            self.flush()

    def _collect_rows(self) -> None:
        if self._rows:
            self._tables.append(_to_table(self._rows))
            self._rows = []

    def add_part(self, part: pa.Table | bytes, sha256: str | None = None) -> Future[bytes]:
        """Write rows as a part of their own, after the rows buffered before them: a table of
        `SCHEMA` (without run_info, which is added), or a part encoded earlier, as its bytes
        (`extractor.part_memo` keeps them). The future gives the part's bytes once on disk.
        `sha256`: the bytes' digest, when the caller has just checked them against it (a
        remembered part), so that a copied part is not hashed twice."""
        self.flush()
        return self._submit(part, sha256)

    def flush(self) -> None:
        """Write buffered rows as the next part (in the background: queued, on disk once
        `wait` returns). Waits first for the oldest part in flight if `PARTS_IN_FLIGHT` are."""
        self._collect_rows()
        if not self._tables:
            return
        table = pa.concat_tables(self._tables)
        self._tables, self._buffered = [], 0
        self._submit(table)

    def _submit(self, part: pa.Table | bytes, sha256: str | None = None) -> Future[bytes]:
        final = self.directory / f"part-{self._next_index:05d}.parquet"
        self._next_index += 1
        if self._thread is None:
            done: Future[bytes] = Future()
            done.set_result(self._write_part(part, final, sha256))
            return done
        while self._pending and (self._pending[0].done() or len(self._pending) >= PARTS_IN_FLIGHT):
            self._pending.popleft().result()  # raises a failed part's error
        future = self._thread.submit(self._write_part, part, final, sha256)
        self._pending.append(future)
        return future

    def wait(self) -> None:
        """Until the parts written in the background, if any, are on disk; raises an error."""
        while self._pending:
            self._pending.popleft().result()

    def _write_part(self, part: pa.Table | bytes, final: Path, sha256: str | None = None) -> bytes:
        """Encode (unless given bytes), then temp file, fsync, rename, the same for its
        checksum, fsync the directory: whole parts or none after a kill, each with its
        checksum unless the kill came between the two renames. Returns the part's bytes."""
        data = part if isinstance(part, bytes) else self._encode(part)
        # Temp files are `.part-*` (`.part-00000.parquet.tmp`): a resumed writer removes them.
        write_checked(final, data, fsync=True, sha256=sha256)
        _fsync_directory(self.directory)
        return data

    def _encode(self, table: pa.Table) -> bytes:
        if self.run_info is not None:
            metadata = {RUN_INFO_KEY: json.dumps(self.run_info, sort_keys=True)}
            table = table.replace_schema_metadata(metadata)
        sink = pa.BufferOutputStream()
        # No column statistics: nothing reads a probe set by min/max, and for the id lists
        # they were a quarter of the write's CPU (a cached re-run: 0.90 -> 0.82 s of CPU).
        pq.write_table(table, sink, write_statistics=False)
        return sink.getvalue().to_pybytes()

    def close(self) -> None:
        try:
            self.flush()
            self.wait()
        finally:
            if self._thread is not None:
                self._thread.shutdown()

    def __enter__(self) -> ProbeSetWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable; a no-op where directories cannot be opened (Windows)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def length_bucket(lengths: np.ndarray) -> np.ndarray:
    """Index into `LENGTH_LABELS` of each history length's bucket (powers of two)."""
    index = np.searchsorted(np.asarray(LENGTH_EDGES), np.asarray(lengths), side="right") - 1
    return np.clip(index, 0, len(LENGTH_EDGES) - 1)


@dataclass(frozen=True)
class ProbeSetSummary:
    """Counts for a run's report; reliability by length bucket is added beside these."""

    queries: int
    answered: int
    failed: int
    answered_views_per_query: dict[int, int]  # answered truncated views -> queries
    length_buckets: dict[str, int]  # history-length bucket -> queries


def summary(table: pa.Table) -> ProbeSetSummary:
    """Answered/failed counts, how many views each query got answered, and history lengths."""
    answered = int(pc.sum(pc.equal(table.column("status"), ANSWERED)).as_py() or 0)
    view_items = table.column("view_items").combine_chunks()
    parents = pc.list_parent_indices(view_items).to_numpy()
    valid = pc.is_valid(pc.list_flatten(view_items)).to_numpy(zero_copy_only=False)
    per_query = np.bincount(parents[valid], minlength=table.num_rows)
    views, view_counts = np.unique(per_query, return_counts=True)
    lengths = pc.list_value_length(table.column("history")).to_numpy()
    bucket_counts = np.bincount(length_bucket(lengths), minlength=len(LENGTH_LABELS))
    return ProbeSetSummary(
        queries=table.num_rows,
        answered=answered,
        failed=table.num_rows - answered,
        answered_views_per_query={int(v): int(c) for v, c in zip(views, view_counts, strict=True)},
        length_buckets={
            label: int(n) for label, n in zip(LENGTH_LABELS, bucket_counts, strict=True) if n
        },
    )
