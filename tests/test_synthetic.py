"""The synthetic generator is seeded, long-tailed, well-formed, and feeds build_dataset."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from seqrec.data.dataset import build_dataset, leave_one_out
from seqrec.data.loading import load_dataset
from seqrec.data.synthetic import generate_synthetic


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate_synthetic(2000, 1000, mean_length=20, seed=3)


def test_shape_and_types(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == ["user", "item", "timestamp"]
    assert frame["timestamp"].dtype == np.int64
    assert frame["user"].nunique() == 2000
    assert frame["item"].nunique() <= 1000
    lengths = frame.groupby("user").size()
    assert lengths.min() >= 5
    assert 18 <= lengths.mean() <= 22
    assert lengths.max() > 5 * lengths.median()  # heavy tail


def test_histories_are_distinct_and_increasing(frame: pd.DataFrame) -> None:
    assert not frame.duplicated(["user", "item"]).any()
    by_user = frame.groupby("user", sort=False)["timestamp"]
    assert (by_user.diff().dropna() > 0).all()


def test_seed_determines_output(frame: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(frame, generate_synthetic(2000, 1000, mean_length=20, seed=3))
    assert not frame.equals(generate_synthetic(2000, 1000, mean_length=20, seed=4))


def test_item_popularity_is_long_tailed(frame: pd.DataFrame) -> None:
    counts = frame["item"].value_counts().to_numpy()  # descending
    top = counts[: len(counts) // 5].sum()
    assert top / counts.sum() > 0.6


def test_build_dataset_and_split(frame: pd.DataFrame) -> None:
    dataset = build_dataset(frame, "synthetic", min_user=5, min_item=5)
    split = leave_one_out(dataset)
    assert dataset.n_users > 1900
    assert 0.1 < split.user_is_head.mean() < 0.3


def test_rejects_impossible_sizes() -> None:
    with pytest.raises(ValueError, match="min_length"):
        generate_synthetic(10, 3)
    with pytest.raises(ValueError, match="at least one user"):
        generate_synthetic(0, 100)


def test_load_dataset_by_name() -> None:
    dataset = load_dataset("synthetic:300:200")
    assert dataset.name == "synthetic:300:200"
    assert dataset.origin == "generate_synthetic(300, 200, seed=0)"
    with pytest.raises(ValueError, match="synthetic:USERS:ITEMS"):
        load_dataset("synthetic:3")
    with pytest.raises(ValueError, match="expected .ml-100k., .synthetic."):
        load_dataset("no-such-dataset")
