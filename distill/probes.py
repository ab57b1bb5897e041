"""A probe set read back as dense arrays: the student's training data.

The extractor writes raw catalogue ids (strings); the student needs dense indices from 1 (0 is
padding). The student's catalogue is the black box's own list (`catalogue.json`, written by the
extractor when the API lists its items) followed by any id seen in the probes that the list
lacked, or, without a list, every id seen in the probes in sorted order. Mapping is done on
whole Arrow columns, never per query in Python.

Only answered queries are kept. A query's truncated views are kept as (length, answer) pairs;
a view counts as a probe of reliability only when it was answered and is shorter than its
query (a view of a one-item history equals the query and says nothing).

The black box's scores of the full view's answer (the optional `scores` column) are kept beside
it when the probe set has any: a score-aware objective can learn the gaps between answer items
that ranks alone cannot show. A probe set without them allocates nothing for them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from extractor.probeset import ANSWERED, RUN_INFO_KEY, read_probe_set
from extractor.run import CATALOGUE_FILENAME

PAD_BLOCK_VALUES = 1 << 21  # ids mapped at a time: each int64 temporary is 16 MB
# Dense ids are held as int32 (catalogues are far below 2**31 items): the id matrices are most
# of a large run's memory. Tensors that index with them are made int64 batch by batch.
ID_DTYPE = np.int32


class ProbeDataError(ValueError):
    """The directory holds no usable probe set."""


@dataclass(frozen=True)
class ProbeData:
    """Answered queries as dense arrays; `item_ids[i - 1]` is the raw id of dense item i."""

    item_ids: list[str]
    query_ids: np.ndarray  # [Q]
    histories: np.ndarray  # [Q, max_history] left-padded dense ids (ID_DTYPE), most recent last
    lengths: np.ndarray  # [Q] full history length (may exceed the padded width)
    topk: np.ndarray  # [Q, k] the full view's answer, best first, 0-padded
    view_lengths: np.ndarray  # [Q, V] length of each truncated view, 0 where none
    view_topk: np.ndarray  # [Q, V, k] each view's answer, 0 where none or failed
    run_info: dict[str, Any]
    unlisted_items: int | None = None  # ids the probes name that the listing lacked (no list: None)
    # [Q, k] float32 black-box score of each `topk` slot, 0 where padded or the row has none;
    # [Q] whether it has them. Both None when no answered query has scores.
    scores: np.ndarray | None = None
    has_scores: np.ndarray | None = None

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_queries(self) -> int:
        return len(self.query_ids)

    @property
    def view_usable(self) -> np.ndarray:
        """[Q, V] views that were answered and differ from their query (shorter)."""
        answered = self.view_topk[:, :, 0] > 0
        return answered & (self.view_lengths > 0) & (self.view_lengths < self.lengths[:, None])


def _catalogue(directory: Path, table: pa.Table) -> tuple[list[str], int | None]:
    """The student's raw ids, and how many of them the black box's listing lacked (None: no
    listing)."""
    # Each column's distinct ids first, then theirs: a chunked array built from the columns
    # themselves (`pa.chunked_array` of ChunkedArrays) took 27 s on 38.9 million ids, through
    # a slow conversion; 0.6 s this way.
    columns = [
        pc.list_flatten(table.column("history")),
        pc.list_flatten(table.column("items")),
        pc.list_flatten(pc.list_flatten(table.column("view_items"))),
    ]
    seen = pc.unique(pa.concat_arrays([pc.unique(column) for column in columns]))
    listed_path = directory / CATALOGUE_FILENAME
    if listed_path.is_file():
        listed = [str(item) for item in json.loads(listed_path.read_text())]
        missing = pc.filter(seen, pc.invert(pc.is_in(seen, pa.array(listed, pa.string()))))
        return listed + sorted(missing.to_pylist()), len(missing)
    return sorted(seen.to_pylist()), None


def _dense(values: pa.Array, catalogue: pa.Array) -> np.ndarray:
    """Dense ids (1-based) of raw ids; null entries become 0."""
    index = pc.index_in(values, value_set=catalogue)
    return pc.fill_null(pc.add(index, 1), 0).to_numpy().astype(ID_DTYPE)


def _pad_lists(lists: pa.Array, catalogue: pa.Array, width: int, left: bool) -> np.ndarray:
    """A list<string> column as a [rows, width] dense matrix (left- or right-aligned, 0-padded).

    Left alignment keeps the most recent `width` items of a history; right alignment keeps the
    first `width` of a ranking. Null lists become all-zero rows.
    """
    return _pad(lists, width, left, ID_DTYPE, lambda values: _dense(values, catalogue))


def _pad_scores(lists: pa.Array, width: int) -> np.ndarray:
    """A list<float> column as a [rows, width] float32 matrix, right-aligned like `_pad_lists`
    pads a ranking (so slot j holds the score of answer item j); null lists and null scores
    give 0 and NaN, which `_score_rows` tells apart from real scores."""
    return _pad(
        lists,
        width,
        False,
        np.float32,
        lambda values: values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False),
    )


def _pad(
    lists: pa.Array,
    width: int,
    left: bool,
    dtype: type,
    convert: Callable[[pa.Array], np.ndarray],
) -> np.ndarray:
    """A list column as a [rows, width] `dtype` matrix of `convert`ed values, 0-padded.

    Rows are converted in blocks of about `PAD_BLOCK_VALUES` values, so the temporaries stay
    bounded however long the lists (every prefix of ML-100k is 9.7 million history ids).
    """
    lists = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    lists = pc.fill_null(lists, pa.scalar([], lists.type))
    lengths = pc.list_value_length(lists).to_numpy().astype(np.int64)
    out = np.zeros((len(lengths), width), dtype=dtype)
    for start, stop in _blocks(lengths, PAD_BLOCK_VALUES):
        block = lengths[start:stop]
        values = convert(pc.list_flatten(lists.slice(start, stop - start)))
        rows = np.repeat(np.arange(len(block)), block)
        position = np.arange(len(values)) - np.repeat(np.cumsum(block) - block, block)
        column = position + (width - block[rows]) if left else position
        keep = (column >= 0) & (column < width)
        out[start + rows[keep], column[keep]] = values[keep]
    return out


def _score_rows(table: pa.Table, k: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """([Q, k] scores, [Q] has scores) of the answered rows, or (None, None) without any.

    A row has scores when its list is there, is as long as its answer and holds only finite
    numbers; any other row (no scores from the API, or a malformed list) has none, and its
    scores are zeroed, so the objective never sees a NaN.
    """
    if "scores" not in table.column_names or table.column("scores").null_count == table.num_rows:
        return None, None
    column = table.column("scores")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)  # NaN where null
    answers = pc.list_value_length(table.column("items")).to_numpy()
    scores = _pad_scores(column, k)
    has = (lengths == answers) & np.isfinite(scores).all(axis=1)
    scores[~has] = 0.0
    if not has.any():
        return None, None
    return scores, has


def _blocks(lengths: np.ndarray, values_per_block: int) -> list[tuple[int, int]]:
    """Consecutive row ranges holding about `values_per_block` values each (at least one row)."""
    ends = np.cumsum(lengths)
    blocks, start = [], 0
    while start < len(lengths):
        before = ends[start - 1] if start else 0
        stop = int(np.searchsorted(ends, before + values_per_block, side="right"))
        stop = max(stop, start + 1)
        blocks.append((start, stop))
        start = stop
    return blocks


def probe_directory(directory: str | Path) -> Path:
    """`directory` as a Path, or `ProbeDataError` when it is not a directory (checked by the
    command line before it loads torch, and by `load_probes`)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ProbeDataError(f"{directory} is not a directory")
    return directory


def load_probes(directory: str | Path, max_history: int = 200) -> ProbeData:
    """Read an extraction directory's answered queries; `max_history` bounds the padded width."""
    directory = probe_directory(directory)
    table = read_probe_set(directory)
    table = table.filter(pc.equal(table.column("status"), ANSWERED))
    if table.num_rows == 0:
        raise ProbeDataError(f"{directory} holds no answered queries; run `recmimic extract`")
    run_info = json.loads((table.schema.metadata or {}).get(RUN_INFO_KEY, b"{}"))
    item_ids, unlisted = _catalogue(directory, table)
    catalogue = pa.array(item_ids, pa.string())

    lengths = pc.list_value_length(table.column("history")).to_numpy().astype(np.int64)
    answer_lengths = pc.list_value_length(table.column("items")).to_numpy()
    k = int(answer_lengths.max())
    histories = _pad_lists(
        table.column("history"), catalogue, min(max_history, int(lengths.max())), left=True
    )
    topk = _pad_lists(table.column("items"), catalogue, k, left=False)
    scores, has_scores = _score_rows(table, k)

    view_counts = pc.list_value_length(table.column("view_lengths")).to_numpy().astype(np.int64)
    n_views = max(int(view_counts.max()), 1)
    flat_view_items = pc.list_flatten(table.column("view_items").combine_chunks())
    view_topk = _pad_lists(flat_view_items, catalogue, k, left=False)
    flat_lengths = pc.list_flatten(table.column("view_lengths")).to_numpy().astype(np.int64)
    rows = np.repeat(np.arange(table.num_rows), view_counts)
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(view_counts) - view_counts, view_counts)
    views = np.zeros((table.num_rows, n_views), dtype=np.int64)
    views[rows, slot] = flat_lengths
    answers = np.zeros((table.num_rows, n_views, k), dtype=ID_DTYPE)
    answers[rows, slot] = view_topk
    return ProbeData(
        item_ids=item_ids,
        query_ids=table.column("query_id").to_numpy(),
        histories=histories,
        lengths=lengths,
        topk=topk,
        view_lengths=views,
        view_topk=answers,
        run_info=run_info,
        unlisted_items=unlisted,
        scores=scores,
        has_scores=has_scores,
    )


def answers_so_far(probes: ProbeData) -> np.ndarray:
    """[Q] distinct histories asked up to and including each query, in query-id order.

    The extractor asks every distinct history once (a view shared by two queries, or equal to
    its own query, is paid once), so this is what a run that stopped after each query would
    have paid, answered queries only.
    """
    width = probes.histories.shape[1]
    seen: set[bytes] = set()
    counts = np.zeros(probes.n_queries, dtype=np.int64)
    order = np.argsort(probes.query_ids, kind="stable")
    for position, q in enumerate(order):
        row = probes.histories[q]
        lengths = [probes.lengths[q]] + [
            n
            for n, answered in zip(
                probes.view_lengths[q], probes.view_topk[q, :, 0] > 0, strict=True
            )
            if answered
        ]
        for n in lengths:
            seen.add(row[width - min(int(n), width) :].tobytes() + int(n).to_bytes(8, "little"))
        counts[position] = len(seen)
    out = np.empty_like(counts)
    out[order] = counts
    return out


def first_answers(probes: ProbeData, budget: int) -> ProbeData:
    """The queries a run with `budget` paid answers would have finished: those, in query-id
    order, whose answers (`answers_so_far`) fit in it. How the leakage curve trains smaller
    budgets on one extraction's prefix, so each budget sees the same answers."""
    keep = np.flatnonzero(answers_so_far(probes) <= budget)
    if len(keep) < 2:
        raise ProbeDataError(f"{budget} answers hold fewer than 2 answered queries")
    names = ("query_ids", "histories", "lengths", "topk", "view_lengths", "view_topk")
    rows = {name: getattr(probes, name)[keep] for name in names}
    if probes.scores is not None:
        rows.update(scores=probes.scores[keep], has_scores=probes.has_scores[keep])
    return replace(probes, **rows)
