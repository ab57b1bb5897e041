"""Every reader yields the same interaction frame from the same log, and bad input is named."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seqrec.data.dataset import build_dataset
from seqrec.data.loading import load_dataset
from seqrec.data.readers import DataFormatError, detect_format, read_interactions

FIXTURES = Path(__file__).parent / "fixtures"
# The log every fixture holds, in file order: user 01 has a tie, user 3 a tie out of time order.
EXPECTED = [
    ("01", "007", 874965758),
    ("01", "42", 874965758),
    ("2", "007", 874965700),
    ("2", "13", 874965900),
    ("3", "42", 881250949),
    ("3", "007", 881250949),
    ("3", "13", 881250000),
]
FILES = {
    "atomic": "sample.inter",
    "ml-100k": "u.data",
    "ml-1m": "ratings.dat",
    "amazon": "amazon_ratings.csv",
    "csv": "named.csv",
}


def rows(frame: pd.DataFrame) -> list[tuple[str, str, int]]:
    return list(zip(frame["user"], frame["item"], frame["timestamp"].tolist(), strict=True))


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("fmt", sorted(FILES))
def test_every_reader_keeps_ids_order_and_ties(fmt: str) -> None:
    frame = read_interactions(FIXTURES / FILES[fmt], fmt)
    assert list(frame.columns) == ["user", "item", "timestamp"]
    assert frame["timestamp"].dtype == np.int64
    assert rows(frame) == EXPECTED


@pytest.mark.parametrize("fmt", sorted(FILES))
def test_format_is_detected(fmt: str) -> None:
    assert detect_format(FIXTURES / FILES[fmt]) == fmt
    assert rows(read_interactions(FIXTURES / FILES[fmt])) == EXPECTED


@pytest.mark.parametrize(
    ("name", "text", "fmt"),
    [
        ("log.tsv", "u1\ti1\t5\t10\n", "ml-100k"),
        ("log.tsv", "user_id:token\titem_id:token\ttimestamp:float\n", "atomic"),
        ("log.txt", "1::2::5::10\n", "ml-1m"),
        ("log.csv", "A1,B2,5.0,1234\n", "amazon"),
        ("log.csv", '"USER_ID","Item_Id","ts"\n', "csv"),
    ],
)
def test_format_is_sniffed_from_first_line(tmp_path: Path, name: str, text: str, fmt: str) -> None:
    assert detect_format(write(tmp_path, name, text)) == fmt


def test_built_dataset_orders_ties_by_file_order() -> None:
    dataset = build_dataset(read_interactions(FIXTURES / "u.data"), "tiny", min_user=1, min_item=1)
    raw = [[dataset.item_ids[i - 1] for i in seq] for seq in dataset.sequences.to_lists()]
    assert raw == [["007", "42"], ["007", "13"], ["13", "42", "007"]]


def test_load_dataset_from_path_records_provenance() -> None:
    path = FIXTURES / "sample.inter"
    dataset = load_dataset(str(path), min_user=1, min_item=1)
    assert (dataset.name, dataset.n_users, dataset.n_interactions) == ("sample", 3, 7)
    assert dataset.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert dataset.origin == str(path.resolve())


def test_explicit_csv_columns(tmp_path: Path) -> None:
    path = write(tmp_path, "log.csv", "when,customer,product\n5,0009,x\n3,0009,y\n")
    frame = read_interactions(path, user_col="Customer", item_col="product", time_col="when")
    assert rows(frame) == [("0009", "x", 5), ("0009", "y", 3)]


def test_extra_columns_and_float_timestamps_in_csv(tmp_path: Path) -> None:
    path = write(tmp_path, "log.csv", "Time,Genre,ItemId,UserId\n1.9e3,drama,a,u\n2000.5,,b,u\n")
    assert rows(read_interactions(path)) == [("u", "a", 1900), ("u", "b", 2000)]


@pytest.mark.parametrize(
    ("name", "text", "fmt", "message"),
    [
        ("u.data", "", None, "no interactions"),
        ("u.data", "\n\n", "ml-100k", "no interactions"),
        ("x.inter", "user_id:token\titem_id:token\ttimestamp:float\n", None, "no interactions"),
        ("x.inter", "user_id:token\titem_id:token\n1\t2\n", None, "timestamp"),
        ("log.csv", "user,item,rating\n1,2,3\n", "csv", "no column named timestamp"),
        ("u.data", "1\t2\t3\t4\n1\t2\t3\t4\t5\n", None, "line 2"),
        ("u.data", "1\t2\t3\t4\n1\t2\t3\n", None, "line 2: timestamp"),
        ("u.data", "1\t2\t3\t4\n1\t2\t3\tsoon\n", None, "'soon' is not a finite number"),
        ("u.data", "1\t2\t3\t4\n\t2\t3\t4\n", None, "line 2: missing user or item"),
        ("ratings.dat", "1::2::3::4\n1:2:3:4\n", None, "line 2"),
        ("log.csv", "hello world\n", None, "cannot detect"),
    ],
)
def test_bad_input_names_the_file(
    tmp_path: Path, name: str, text: str, fmt: str | None, message: str
) -> None:
    path = write(tmp_path, name, text)
    with pytest.raises(DataFormatError, match=message) as caught:
        read_interactions(path, fmt)
    assert str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="^file not found: "):
        read_interactions(tmp_path / "absent.inter")


def test_unknown_format_and_misplaced_columns() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        read_interactions(FIXTURES / "u.data", "parquet")
    with pytest.raises(ValueError, match="only be given for fmt='csv'"):
        read_interactions(FIXTURES / "u.data", "ml-100k", user_col="user")
