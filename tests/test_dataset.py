"""Ordering, k-core, densification, leave-one-out split and head/tail group invariants."""

import numpy as np
import pandas as pd
import pytest

from seqrec.data.dataset import build_dataset, kcore, leave_one_out
from seqrec.data.sequences import Sequences


def frame(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user", "item", "timestamp"])


def test_chronological_order_keeps_file_order_on_ties() -> None:
    data = frame([("u", "b", 5), ("u", "a", 1), ("u", "c", 5), ("u", "d", 3), ("u", "e", 5)])
    dataset = build_dataset(data, "t", min_user=1, min_item=1)
    raw = dataset.item_ids[dataset.sequences[0] - 1].tolist()
    assert raw == ["a", "d", "b", "c", "e"]


def test_ids_dense_from_one_and_round_trip_to_raw() -> None:
    data = frame([("2", "x", 1), ("1", "y", 2), ("2", "y", 3), ("1", "z", 4)])
    dataset = build_dataset(data, "t", min_user=1, min_item=1)
    assert sorted(set(dataset.sequences.items.tolist())) == [1, 2, 3]
    pairs = {
        (dataset.user_ids[u], dataset.item_ids[i - 1])
        for u in range(dataset.n_users)
        for i in dataset.sequences[u]
    }
    assert pairs == {(u, i) for u, i, _ in data.itertuples(index=False)}


def test_kcore_is_iterative() -> None:
    # Dropping item "rare" leaves user "b" with 1 interaction, which must then go too.
    data = frame(
        [
            ("a", "x", 1),
            ("a", "y", 2),
            ("b", "x", 1),
            ("b", "rare", 2),
            ("c", "x", 1),
            ("c", "y", 2),
        ]
    )
    kept = kcore(data, min_user=2, min_item=2)
    assert set(kept["user"]) == {"a", "c"}
    assert kept.groupby("user").size().min() >= 2
    assert kept.groupby("item").size().min() >= 2


def test_kcore_empty_result_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no interactions left"):
        build_dataset(frame([("a", "x", 1)]), "t", min_user=5, min_item=5)


def test_leave_one_out_split() -> None:
    lists = [[1, 2, 3, 4, 5], [6, 7, 8], [2, 4, 6, 8, 1, 3]]
    seqs = Sequences.from_lists(lists)
    dataset = build_dataset(
        frame([(str(u), str(i), t) for u, s in enumerate(lists) for t, i in enumerate(s)]),
        "t",
        min_user=1,
        min_item=1,
    )
    split = leave_one_out(dataset)
    raw = lambda dense: dataset.item_ids[np.asarray(dense) - 1].tolist()  # noqa: E731
    for u, history in enumerate(seqs.to_lists()):
        expected = [str(i) for i in history]
        assert raw(split.train[u]) == expected[:-2]
        assert raw([split.valid_target[u]]) == [expected[-2]]
        assert raw([split.test_target[u]]) == [expected[-1]]
        assert raw(split.test_input[u]) == expected[:-1]


def test_groups_come_from_training_split() -> None:
    rng = np.random.default_rng(0)
    lists = [rng.integers(1, 40, size=rng.integers(3, 60)).tolist() for _ in range(200)]
    data = frame([(str(u), str(i), t) for u, s in enumerate(lists) for t, i in enumerate(s)])
    split = leave_one_out(build_dataset(data, "t", min_user=1, min_item=1))
    lengths = split.train.lengths
    assert 0.1 <= split.user_is_head.mean() <= 0.25
    assert lengths[split.user_is_head].min() > lengths[~split.user_is_head].max()
    counts = np.bincount(split.train.items, minlength=split.n_items + 1)
    head = split.item_is_head
    assert not head[0]
    assert counts[head].min() > counts[1:][~head[1:]].max()


def test_padded_and_gather() -> None:
    seqs = Sequences.from_lists([[1, 2, 3], [4], [5, 6, 7, 8, 9]])
    assert seqs.padded(4).tolist() == [[0, 1, 2, 3], [0, 0, 0, 4], [6, 7, 8, 9]]
    rows, items = seqs.gather(np.array([2, 0]))
    assert rows.tolist() == [0] * 5 + [1] * 3
    assert items.tolist() == [5, 6, 7, 8, 9, 1, 2, 3]
    assert seqs.truncate_end(2).to_lists() == [[1], [], [5, 6, 7]]


def _write_log(path, rows: list[tuple[str, str, int]]) -> None:
    """A MovieLens u.data file (user, item, rating, timestamp; tab-separated)."""
    path.write_text("".join(f"{u}\t{i}\t3\t{t}\n" for u, i, t in rows))


def _assert_same(a, b) -> None:
    assert np.array_equal(a.sequences.items, b.sequences.items)
    assert np.array_equal(a.sequences.offsets, b.sequences.offsets)
    assert a.item_ids.tolist() == b.item_ids.tolist()
    assert a.user_ids.tolist() == b.user_ids.tolist()
    assert a.card() == b.card()


ROWS = [(u, i, t) for t, (u, i) in enumerate((u, i) for u in "abc" for i in "wxyz")]


def test_processed_dataset_is_served_from_cache(tmp_path, monkeypatch) -> None:
    """The second load of the same bytes and settings reads no raw file and builds nothing."""
    from seqrec.data import loading

    monkeypatch.setenv("RECMIMIC_CACHE", str(tmp_path / "cache"))
    raw = tmp_path / "u.data"
    _write_log(raw, ROWS)
    first = loading.load_dataset(str(raw), min_user=1, min_item=1)
    assert len(list((tmp_path / "cache" / "processed").glob("*.npz"))) == 1

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt although cached")

    monkeypatch.setattr(loading, "build_dataset", no_build)
    monkeypatch.setattr(loading, "read_interactions", no_build)
    _assert_same(loading.load_dataset(str(raw), min_user=1, min_item=1), first)


def test_changed_raw_file_is_not_served_from_cache(tmp_path, monkeypatch) -> None:
    """The key is the raw file's content: a file edited in place is processed again."""
    from seqrec.data.loading import load_dataset

    monkeypatch.setenv("RECMIMIC_CACHE", str(tmp_path / "cache"))
    raw = tmp_path / "u.data"
    _write_log(raw, ROWS)
    before = load_dataset(str(raw), min_user=1, min_item=1)
    _write_log(raw, ROWS + [("d", "w", 99)])
    after = load_dataset(str(raw), min_user=1, min_item=1)
    assert after.n_users == before.n_users + 1
    assert after.sha256 != before.sha256
    monkeypatch.setenv("RECMIMIC_CACHE", str(tmp_path / "fresh"))
    _assert_same(after, load_dataset(str(raw), min_user=1, min_item=1))


def test_processing_settings_are_part_of_the_key(tmp_path, monkeypatch) -> None:
    from seqrec.data.loading import load_dataset

    monkeypatch.setenv("RECMIMIC_CACHE", str(tmp_path / "cache"))
    raw = tmp_path / "u.data"
    _write_log(raw, ROWS + [("d", "w", 99)])  # user d has one interaction
    assert load_dataset(str(raw), min_user=1, min_item=1).n_users == 4
    assert load_dataset(str(raw), min_user=2, min_item=1).n_users == 3


def test_processing_code_is_part_of_the_key(monkeypatch) -> None:
    """A change to the code that builds datasets must not be hidden by entries built before."""
    from seqrec.data import processed

    before = processed.processed_key("0" * 64, "ml-100k", 5, 5)
    monkeypatch.setattr(processed, "_builder_code_sha256", lambda: "changed")
    assert processed.processed_key("0" * 64, "ml-100k", 5, 5) != before


def test_unreadable_processed_entry_is_rebuilt(tmp_path, monkeypatch) -> None:
    from seqrec.data.loading import load_dataset

    monkeypatch.setenv("RECMIMIC_CACHE", str(tmp_path / "cache"))
    raw = tmp_path / "u.data"
    _write_log(raw, ROWS)
    first = load_dataset(str(raw), min_user=1, min_item=1)
    (entry,) = (tmp_path / "cache" / "processed").glob("*.npz")
    entry.write_bytes(b"not a zip")
    _assert_same(load_dataset(str(raw), min_user=1, min_item=1), first)
    _assert_same(load_dataset(str(raw), min_user=1, min_item=1), first)  # written again
    assert entry.read_bytes()[:2] == b"PK"
