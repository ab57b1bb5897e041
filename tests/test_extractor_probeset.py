"""The probe set is written in atomic parts, resumes after a kill and reads back exactly."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from extractor.ids import JsonIds, encode_ids, history_json
from extractor.probeset import (
    LENGTH_LABELS,
    PARTS_IN_FLIGHT,
    SCHEMA,
    PartChecksumError,
    ProbeRow,
    ProbeSetError,
    ProbeSetWriter,
    ViewAnswer,
    length_bucket,
    probe_table,
    read_probe_set,
    summary,
)
from seqrec.hashing import CHECKSUM_SUFFIX, file_sha256

REPO = Path(__file__).resolve().parents[1]


def row(query_id: int, length: int = 4, failed: bool = False) -> ProbeRow:
    """A query of `length` ids with a half view; its views fail on odd ids."""
    history = [f"{query_id:03d}{i}" for i in range(length)]
    if failed:
        return ProbeRow(query_id, history, None, error="HTTP 503")
    half = ViewAnswer(0.5, (length + 1) // 2, None if query_id % 2 else ["9", "007"])
    return ProbeRow(query_id, history, ["007", str(query_id)], views=[half])


def part_names(directory: Path) -> list[str]:
    """The directory's files but the parts' checksums (`part-*.parquet.sha256`)."""
    return sorted(path.name for path in directory.iterdir() if path.suffix != CHECKSUM_SUFFIX)


def test_rows_are_written_in_numbered_parts(tmp_path: Path) -> None:
    with ProbeSetWriter(tmp_path, rows_per_part=3) as writer:
        writer.add_many(row(i) for i in range(7))
        assert part_names(tmp_path) == ["part-00000.parquet", "part-00001.parquet"]
    assert part_names(tmp_path)[-1] == "part-00002.parquet"  # the context manager flushed
    for name in part_names(tmp_path):  # each part has its checksum, in sha256sum's format
        sidecar = (tmp_path / f"{name}{CHECKSUM_SUFFIX}").read_text()
        assert sidecar == f"{file_sha256(tmp_path / name)}  {name}\n"
    table = read_probe_set(tmp_path)
    assert table.schema.equals(SCHEMA) and table.num_rows == 7
    assert table.column("query_id").to_pylist() == list(range(7))


@pytest.mark.parametrize("background", [False, True])
def test_a_part_of_its_own_comes_after_the_buffered_rows_and_gives_its_bytes(
    tmp_path: Path, background: bool
) -> None:
    """`add_part` is how a run remembers a chunk's part (its bytes, as on disk) and copies one
    back (bytes written verbatim as the next part)."""
    info = {"endpoint": "http://t", "k": 2}
    writer = ProbeSetWriter(tmp_path / "a", rows_per_part=10, run_info=info, background=background)
    writer.add_many(row(i) for i in range(3))  # buffered
    own = writer.add_part(
        probe_table([3, 4], [["1"], ["2"]], [["x"], ["y"]], [None, None], [], np.zeros((2, 0)), [])
    )
    writer.add(row(5))
    writer.close()
    files = [path.read_bytes() for path in sorted((tmp_path / "a").glob("part-*.parquet"))]
    assert len(files) == 3 and own.result() == files[1]
    assert pq.read_metadata(tmp_path / "a" / "part-00001.parquet").num_rows == 2
    assert read_probe_set(tmp_path / "a").column("query_id").to_pylist() == list(range(6))

    copy = ProbeSetWriter(tmp_path / "b", run_info=info, background=background)
    assert copy.add_part(files[1]).result() == files[1]
    copy.close()
    assert (tmp_path / "b" / "part-00000.parquet").read_bytes() == files[1]


def test_parts_carry_no_column_statistics(tmp_path: Path) -> None:
    """Nothing filters a probe set by min/max, and computing them cost a quarter of a write."""
    with ProbeSetWriter(tmp_path) as writer:
        writer.add_many(row(i) for i in range(4))
    metadata = pq.ParquetFile(tmp_path / "part-00000.parquet").metadata
    group = metadata.row_group(0)
    assert group.num_columns > 0
    assert not any(group.column(i).is_stats_set for i in range(group.num_columns))


def test_round_trip_keeps_ids_nulls_and_views(tmp_path: Path) -> None:
    rows = [row(0), row(1), row(2, failed=True), ProbeRow(3, ["007"], ["1"])]
    with ProbeSetWriter(tmp_path) as writer:
        writer.add_many(rows)
    got = read_probe_set(tmp_path).to_pylist()
    assert got[0] == {
        "query_id": 0,
        "history": ["0000", "0001", "0002", "0003"],
        "items": ["007", "0"],
        "status": "answered",
        "error": None,
        "view_scales": [0.5],
        "view_lengths": [2],
        "view_items": [["9", "007"]],
    }
    assert got[1]["view_items"] == [None]  # a failed view keeps its place
    assert (got[2]["status"], got[2]["items"], got[2]["error"]) == ("failed", None, "HTTP 503")
    assert got[3]["history"] == ["007"] and got[3]["view_scales"] == []


def as_table(rows: list[ProbeRow]) -> pa.Table:
    """`rows` (each with one half view) through the columnar builder the extractor uses."""
    return probe_table(
        [r.query_id for r in rows],
        [r.history for r in rows],
        [r.items for r in rows],
        [r.error for r in rows],
        [0.5],
        np.array([[v.length for v in r.views] for r in rows]),
        [v.items for r in rows for v in r.views],
    )


def test_tables_and_rows_write_the_same_probe_set(tmp_path: Path) -> None:
    rows = [row(i) for i in range(7)]
    with ProbeSetWriter(tmp_path / "rows", rows_per_part=3) as writer:
        writer.add_many(rows)
    with ProbeSetWriter(tmp_path / "tables", rows_per_part=3) as writer:
        writer.add_table(as_table(rows[:2]))
        writer.add(rows[2])  # rows and tables mix, in the order they were added
        writer.add_table(as_table(rows[3:]))
        writer.add_table(as_table([]))  # nothing to write: no empty part
    assert part_names(tmp_path / "tables") == ["part-00000.parquet", "part-00001.parquet"]
    assert read_probe_set(tmp_path / "tables").equals(read_probe_set(tmp_path / "rows"))


def test_a_table_added_after_a_row_wins_as_the_later_write(tmp_path: Path) -> None:
    with ProbeSetWriter(tmp_path) as writer:
        writer.add(row(4, failed=True))
        writer.add_table(as_table([row(4)]))
    assert read_probe_set(tmp_path).column("status").to_pylist() == ["answered"]


def test_resume_skips_what_is_on_disk(tmp_path: Path) -> None:
    first = ProbeSetWriter(tmp_path, rows_per_part=4)
    first.add_many(row(i, failed=i == 5) for i in range(10))  # 8 flushed, 2 still buffered
    del first  # killed: the buffer is lost (the answer cache still holds those answers)
    resumed = ProbeSetWriter(tmp_path, rows_per_part=4)
    assert resumed.done_ids() == set(range(8))
    assert resumed.done_ids(include_failed=False) == set(range(8)) - {5}
    done = resumed.done_ids(include_failed=False)
    resumed.add_many(row(query_id) for query_id in range(20) if query_id not in done)
    resumed.close()
    assert part_names(tmp_path)[-1] == "part-00005.parquet"  # numbering continued: 13 rows
    table = read_probe_set(tmp_path)
    assert table.column("query_id").to_pylist() == list(range(20))
    assert set(table.column("status").to_pylist()) == {"answered"}  # the retry won


def test_dedup_keeps_the_last_write(tmp_path: Path) -> None:
    with ProbeSetWriter(tmp_path, rows_per_part=2) as writer:
        writer.add_many([row(1, failed=True), row(0), row(1), row(2, failed=True)])
        writer.add(row(2, length=6))  # later part, same query
    table = read_probe_set(tmp_path)
    assert table.column("query_id").to_pylist() == [0, 1, 2]
    assert table.column("status").to_pylist() == ["answered"] * 3
    assert len(table.column("history")[2].as_py()) == 6


def test_partial_temp_files_are_ignored_and_removed(tmp_path: Path) -> None:
    with ProbeSetWriter(tmp_path) as writer:
        writer.add_many(row(i) for i in range(3))
    whole = (tmp_path / "part-00000.parquet").read_bytes()
    temp = tmp_path / ".part-00001.parquet.tmp"
    temp.write_bytes(whole[: len(whole) // 2])  # a writer killed mid-write
    (tmp_path / "notes.txt").write_text("not a part")
    assert read_probe_set(tmp_path).num_rows == 3
    writer = ProbeSetWriter(tmp_path)
    assert not temp.exists() and writer.done_ids() == {0, 1, 2}


def test_a_corrupt_part_is_reported_not_skipped(tmp_path: Path) -> None:
    (tmp_path / "part-00000.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(ProbeSetError, match="part-00000.parquet"):
        read_probe_set(tmp_path)


def flip_bit(path: Path, offset: int, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def test_a_part_with_any_flipped_bit_is_refused_by_name(tmp_path: Path) -> None:
    """Without its checksum, most single-bit flips in a part read back as other data (56 of
    60: an item 478 became 467); with it, every flip is refused, by reader and resumed writer
    alike, and nothing of the probe set is read."""
    with ProbeSetWriter(tmp_path, rows_per_part=3, run_info={"k": 2}) as writer:
        writer.add_many(row(i) for i in range(6))
    part = tmp_path / "part-00001.parquet"
    whole = part.read_bytes()
    for offset in range(0, len(whole), max(1, len(whole) // 60)):
        flip_bit(part, offset, bit=offset % 8)
        with pytest.raises(PartChecksumError, match="part-00001.parquet is damaged"):
            read_probe_set(tmp_path)
        with pytest.raises(PartChecksumError, match="part-00001.parquet"):
            ProbeSetWriter(tmp_path, run_info={"k": 2})  # resuming reads the last part
        part.write_bytes(whole)
    assert read_probe_set(tmp_path).num_rows == 6
    (tmp_path / f"part-00000.parquet{CHECKSUM_SUFFIX}").write_text("not a checksum\n")
    with pytest.raises(PartChecksumError, match="part-00000.parquet.sha256 is damaged"):
        read_probe_set(tmp_path)
    assert issubclass(PartChecksumError, ProbeSetError)  # the CLI's one-line error


def test_a_lost_part_whose_checksum_is_there_is_refused(tmp_path: Path) -> None:
    with ProbeSetWriter(tmp_path, rows_per_part=2) as writer:
        writer.add_many(row(i) for i in range(6))
    (tmp_path / "part-00001.parquet").unlink()
    with pytest.raises(PartChecksumError, match="part-00001.parquet is missing"):
        read_probe_set(tmp_path)
    with pytest.raises(PartChecksumError, match="part-00001.parquet is missing"):
        ProbeSetWriter(tmp_path).done_ids()
    (tmp_path / f"part-00001.parquet{CHECKSUM_SUFFIX}").unlink()  # the rows dropped knowingly
    assert read_probe_set(tmp_path).column("query_id").to_pylist() == [0, 1, 4, 5]


def test_parts_written_before_checksums_read_unverified_and_resume(tmp_path: Path) -> None:
    with ProbeSetWriter(tmp_path, rows_per_part=2) as writer:
        writer.add_many(row(i) for i in range(4))
    expected = read_probe_set(tmp_path)
    for sidecar in tmp_path.glob(f"*{CHECKSUM_SUFFIX}"):
        sidecar.unlink()  # as an older version left the directory
    assert read_probe_set(tmp_path).equals(expected)
    with ProbeSetWriter(tmp_path, rows_per_part=2) as writer:
        writer.add_many(row(i) for i in range(4, 6))
    assert read_probe_set(tmp_path).num_rows == 6  # old parts unverified, the new one checked
    assert [p.name for p in tmp_path.glob(f"*{CHECKSUM_SUFFIX}")] == [
        f"part-00002.parquet{CHECKSUM_SUFFIX}"
    ]


def test_resume_with_other_settings_is_refused(tmp_path: Path) -> None:
    info = {"endpoint": "http://t", "model_tag": "abc", "k": 10, "scales": (1.0, 0.5)}
    with ProbeSetWriter(tmp_path, run_info=info) as writer:
        writer.add(row(0))
    ProbeSetWriter(tmp_path, run_info={**info, "scales": [1.0, 0.5]})  # same after JSON
    with pytest.raises(ProbeSetError, match="other settings"):
        ProbeSetWriter(tmp_path, run_info={**info, "model_tag": "def"})
    # A tag one run did not know is no conflict; anything else that differs still is.
    ProbeSetWriter(tmp_path, run_info={**info, "model_tag": None})
    with pytest.raises(ProbeSetError, match="other settings"):
        ProbeSetWriter(tmp_path, run_info={**info, "model_tag": None, "k": 20})
    assert read_probe_set(tmp_path).schema.metadata is not None


def test_empty_directory_reads_as_an_empty_table(tmp_path: Path) -> None:
    table = read_probe_set(tmp_path)
    assert table.num_rows == 0 and table.schema.equals(SCHEMA)
    assert ProbeSetWriter(tmp_path).done_ids() == set()
    assert summary(table).queries == 0


def test_row_needs_items_or_an_error() -> None:
    with pytest.raises(ValueError):
        ProbeRow(0, ["1"], None)
    with pytest.raises(ValueError):
        ProbeRow(0, ["1"], ["2"], error="both")


def test_summary(tmp_path: Path) -> None:
    with ProbeSetWriter(tmp_path) as writer:
        writer.add_many([row(0, 1), row(1, 3), row(2, 3), row(3, 40, failed=True), row(4, 200)])
    result = summary(read_probe_set(tmp_path))
    assert (result.queries, result.answered, result.failed) == (5, 4, 1)
    assert result.answered_views_per_query == {0: 2, 1: 3}  # odd ids' views failed
    assert result.length_buckets == {"1": 1, "2-3": 2, "32-63": 1, "128+": 1}
    assert LENGTH_LABELS[length_bucket(pa.array([7]).to_numpy())[0]] == "4-7"


WRITER = """
import sys
from extractor.probeset import ProbeRow, ProbeSetWriter

writer = ProbeSetWriter(sys.argv[1], rows_per_part=2000)
query_id = 0
while True:
    writer.add(ProbeRow(query_id, [str(query_id)] * 20, [str(i) for i in range(100)]))
    query_id += 1
"""


def test_sigkill_mid_write_leaves_only_whole_parts(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    out = tmp_path / "probes"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, str(script), str(out)], env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (not out.exists() or len(list(out.iterdir())) < 4):
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()
    table = read_probe_set(out)
    n = table.num_rows
    assert n > 0 and n % 2000 == 0
    assert table.column("query_id").to_pylist() == list(range(n))
    assert ProbeSetWriter(out).done_ids() == set(range(n))


def test_background_writer_writes_the_same_parts(tmp_path: Path) -> None:
    rows = [row(i, failed=i == 3) for i in range(7)]
    with ProbeSetWriter(tmp_path / "sync", rows_per_part=3) as writer:
        writer.add_many(rows)
    background = ProbeSetWriter(tmp_path / "thread", rows_per_part=3, background=True)
    background.add_many(rows)
    assert background.done_ids() == set(range(6))  # waits for the part in flight
    background.close()
    assert part_names(tmp_path / "thread") == part_names(tmp_path / "sync")
    assert read_probe_set(tmp_path / "thread").equals(read_probe_set(tmp_path / "sync"))


def test_background_writer_queues_parts_before_it_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    writer = ProbeSetWriter(tmp_path, rows_per_part=1, background=True)
    write_part = writer._write_part

    def held(table: pa.Table, final: Path, sha256: str | None) -> bytes:
        release.wait(10)
        return write_part(table, final, sha256)

    monkeypatch.setattr(writer, "_write_part", held)
    for i in range(PARTS_IN_FLIGHT):
        writer.add(row(i))  # queued: returns while no part is on disk
    assert not list(tmp_path.glob("part-*"))
    adding = threading.Thread(target=writer.add, args=(row(99),))
    adding.start()
    adding.join(0.3)
    assert adding.is_alive()  # the queue is full: it waits for the oldest part
    release.set()
    adding.join(10)
    writer.close()
    assert writer.done_ids() == set(range(PARTS_IN_FLIGHT)) | {99}


def test_background_write_error_is_raised_not_lost(tmp_path: Path) -> None:
    writer = ProbeSetWriter(tmp_path, rows_per_part=1, background=True)
    writer.add(row(0))
    writer.wait()
    shutil.rmtree(tmp_path)  # the next part cannot be written
    writer.add(row(1))
    with pytest.raises(OSError):
        writer.close()


ODD_ANSWERS = [["1", "2"], [], None, [""], ["", "x", ""], ["é", "日本", "𝄞"], ["a,b", "[c]"], ["7"]]


def test_cached_answers_are_written_as_their_ids(tmp_path: Path) -> None:
    """Answers kept as the cache's JSON text (parsed in bulk) read back as the same ids."""
    texts = [None if a is None else JsonIds(encode_ids(a)) for a in ODD_ANSWERS]
    rows = [
        ProbeRow(
            i, ["h"], items, None if items is not None else "HTTP 503", [ViewAnswer(0.5, 1, v)]
        )
        for i, (items, v) in enumerate(zip(texts, reversed(texts), strict=True))
    ]
    with ProbeSetWriter(tmp_path) as writer:
        writer.add_many(rows)
    table = read_probe_set(tmp_path)
    assert table.column("items").to_pylist() == ODD_ANSWERS
    assert table.column("view_items").to_pylist() == [[v] for v in reversed(ODD_ANSWERS)]


def test_histories_given_as_their_canonical_json_are_written_as_their_ids(
    tmp_path: Path,
) -> None:
    """The run hands histories over as the JSON its cache keys are made of (`history_json`):
    plain ones are split by Arrow, ones with escapes decoded, both read back as given."""
    histories = [a for a in ODD_ANSWERS if a] + [['q"uote', "back\\slash", "tab\t"]]
    table = probe_table(
        list(range(len(histories))),
        [JsonIds(history_json(history)) for history in histories],
        [["1"]] * len(histories),
        [None] * len(histories),
        [],
        np.zeros((len(histories), 0), dtype=np.int32),
        [],
    )
    assert table.column("history").to_pylist() == histories


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ([JsonIds('["a", "b"]'), JsonIds('["x"]')], [["a", "b"], ["x"]]),  # spaces
        ([JsonIds('["q\\"uote","\\\\"]'), None], [['q"uote', "\\"], None]),  # escapes
        ([JsonIds('["x"]'), ["y"]], [["x"], ["y"]]),  # an answer paid in this run
    ],
)
def test_answers_that_are_not_plain_json_are_decoded(
    tmp_path: Path, answers: list, expected: list
) -> None:
    with ProbeSetWriter(tmp_path) as writer:
        writer.add_many(
            ProbeRow(i, ["h"], items, None if items is not None else "HTTP 503")
            for i, items in enumerate(answers)
        )
    assert read_probe_set(tmp_path).column("items").to_pylist() == expected


def test_parts_with_and_without_scores_read_as_one_table(tmp_path: Path) -> None:
    """A run that kept scores can resume a probe set whose older parts have none; asking for
    the column works whichever parts have it."""
    plain = probe_table([0], [["1"]], [["a", "b"]], [None], [], np.zeros((1, 0)), [])
    scored = probe_table(
        [1, 2],
        [["1"], ["2"]],
        [["b", "a"], None],
        [None, "x"],
        [],
        np.zeros((2, 0)),
        [],
        scores=[[2.5, 0.5], None],
    )
    with ProbeSetWriter(tmp_path) as writer:
        writer.add_part(plain)
        writer.add_part(scored)
    whole = read_probe_set(tmp_path)
    assert whole.column("scores").to_pylist() == [None, [2.5, 0.5], None]
    some = read_probe_set(tmp_path, columns=["query_id", "scores"])
    assert some.column_names == ["query_id", "scores"]
    assert some.column("scores").to_pylist() == [None, [2.5, 0.5], None]
    (tmp_path / "part-00001.parquet").unlink()
    (tmp_path / "part-00001.parquet.sha256").unlink()
    assert read_probe_set(tmp_path, columns=["query_id", "scores"]).column_names == ["query_id"]
