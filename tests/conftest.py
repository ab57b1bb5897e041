"""Settings every test shares: the suite writes only under pytest's temporary directories."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from seqrec.data.fetch import SOURCE_FILE, dataset_cache_dir


@pytest.fixture(scope="session", autouse=True)
def private_dataset_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """RECMIMIC_CACHE for the whole run (and the commands it starts) in a temporary folder.

    Tests load files and write processed datasets into the cache; with the user's own cache
    they left entries there and read the user's entries back. The user's ML-100k download, if
    any, is copied in (read, never written), so a test that needs it stays offline and fast;
    anything fetched during the run stays cached until the run ends.
    """
    cache = tmp_path_factory.mktemp("recmimic-cache")
    users_ml100k = dataset_cache_dir("ml-100k")  # before the variable changes
    if (users_ml100k / SOURCE_FILE).is_file():
        shutil.copytree(users_ml100k, cache / "datasets" / "ml-100k")
    before = os.environ.get("RECMIMIC_CACHE")
    os.environ["RECMIMIC_CACHE"] = str(cache)
    yield cache
    if before is None:
        os.environ.pop("RECMIMIC_CACHE", None)
    else:
        os.environ["RECMIMIC_CACHE"] = before
