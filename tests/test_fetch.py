"""Cache logic of the ML-100k fetcher, offline: downloads are replaced by stubs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from seqrec.data import fetch
from seqrec.data.fetch import FetchedFile, FetchError, cache_dir, fetch_ml100k

DATA = b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t2\t3\t4\n"


def unreachable(*_: object) -> None:
    raise OSError("network disabled in tests")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "_from_grouplens", unreachable)
    monkeypatch.setattr(fetch, "_from_recbole_wheel", unreachable)


def populate(directory: Path, data: bytes = DATA) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ml-100k.inter").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    record = {"file": "ml-100k.inter", "sha256": sha, "origin": "test", "fmt": "atomic"}
    (directory / "source.json").write_text(json.dumps(record))
    return sha


def test_cache_dir_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RECMIMIC_CACHE", str(tmp_path / "explicit"))
    assert cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("RECMIMIC_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "recmimic"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "recmimic"


def test_cached_file_is_returned_without_network(tmp_path: Path) -> None:
    sha = populate(tmp_path)
    fetched = fetch_ml100k(tmp_path)
    assert fetched == FetchedFile(tmp_path / "ml-100k.inter", sha, "test", "atomic")


def test_default_location_is_under_cache_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RECMIMIC_CACHE", str(tmp_path))
    populate(tmp_path / "datasets" / "ml-100k")
    assert fetch_ml100k().path == tmp_path / "datasets" / "ml-100k" / "ml-100k.inter"


def test_corrupted_cache_is_detected(tmp_path: Path) -> None:
    populate(tmp_path)
    (tmp_path / "ml-100k.inter").write_bytes(DATA + b"5\t6\t7\t8\n")
    with pytest.raises(FetchError, match="sha256"):
        fetch_ml100k(tmp_path)


def test_unreadable_record_is_reported(tmp_path: Path) -> None:
    (tmp_path / "source.json").write_text("{not json")
    with pytest.raises(FetchError, match="source.json"):
        fetch_ml100k(tmp_path)


def test_failed_downloads_say_what_was_tried(tmp_path: Path) -> None:
    with pytest.raises(FetchError) as caught:
        fetch_ml100k(tmp_path / "empty")
    message = str(caught.value)
    assert fetch.GROUPLENS_URL in message
    assert fetch.RECBOLE_ORIGIN in message
    assert "network disabled" in message


def test_fallback_download_is_stored_and_then_cached(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wheel = ("ml-100k.inter", DATA, fetch.RECBOLE_ORIGIN, "atomic")
    monkeypatch.setattr(fetch, "_from_recbole_wheel", lambda: wheel)
    first = fetch_ml100k(tmp_path)
    assert first.path.read_bytes() == DATA
    assert first.sha256 == hashlib.sha256(DATA).hexdigest()
    assert json.loads((tmp_path / "source.json").read_text())["origin"] == fetch.RECBOLE_ORIGIN
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml-100k.inter", "source.json"]
    monkeypatch.setattr(fetch, "_from_recbole_wheel", unreachable)
    assert fetch_ml100k(tmp_path) == first


def test_the_suite_keeps_its_dataset_cache_in_a_temporary_folder(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Tests once wrote processed datasets into the user's RECMIMIC_CACHE (conftest.py)."""
    assert cache_dir().resolve().is_relative_to(tmp_path_factory.getbasetemp().resolve())
