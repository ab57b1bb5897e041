"""Read raw interaction logs in the common public formats into an interaction frame.

Every reader returns columns `user`, `item` (str, ids kept verbatim, so "007" stays "007") and
`timestamp` (int64) in file order; ordering by time is `build_dataset`'s job. All parsing goes
through pandas' C parser so that files with millions of rows load in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported by the functions that parse: a cached dataset loads without it
    import pandas as pd

FORMATS = ("atomic", "ml-100k", "ml-1m", "amazon", "csv")

USER_NAMES = ("user", "user_id", "userid")
ITEM_NAMES = ("item", "item_id", "itemid", "movieid")
TIME_NAMES = ("timestamp", "time", "ts")


class DataFormatError(ValueError):
    """An interaction file is missing, empty, or not in the format it was read as."""


def read_interactions(
    path: str | Path,
    fmt: str | None = None,
    *,
    user_col: str | None = None,
    item_col: str | None = None,
    time_col: str | None = None,
) -> pd.DataFrame:
    """Read `path` as `fmt` (detected from the name or first line when None).

    `user_col`/`item_col`/`time_col` name the columns of a headed CSV whose names are not the
    usual ones; giving any of them implies `fmt="csv"`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"file not found: {path}")
    explicit = user_col is not None or item_col is not None or time_col is not None
    if explicit and fmt not in (None, "csv"):
        raise ValueError(f"column names can only be given for fmt='csv', not {fmt!r}")
    if fmt is None:
        fmt = "csv" if explicit else detect_format(path)
    if fmt == "csv":
        return read_csv(path, user_col=user_col, item_col=item_col, time_col=time_col)
    if fmt not in _READERS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return _READERS[fmt](path)


def detect_format(path: Path) -> str:
    """Guess the format from well-known file names, else from the first line."""
    if path.suffix == ".inter":
        return "atomic"
    if path.name == "u.data":
        return "ml-100k"
    if path.name == "ratings.dat":
        return "ml-1m"
    line = _first_line(path)
    if "::" in line:
        return "ml-1m"
    if "\t" in line:
        return "atomic" if ":" in line else "ml-100k"
    fields = [field.strip().strip('"').lower() for field in line.split(",")]
    if _find(fields, USER_NAMES) is not None and _find(fields, ITEM_NAMES) is not None:
        return "csv"
    if len(fields) == 4 and _is_number(fields[3]):
        return "amazon"
    raise DataFormatError(
        f"{path}: cannot detect the format of {line[:60]!r}; name it with --fmt "
        f"({', '.join(FORMATS)})"
    )


def read_atomic(path: str | Path) -> pd.DataFrame:
    """RecBole atomic `.inter`: tab-separated, header fields `name:type`."""
    path = Path(path)
    names = [field.split(":", 1)[0].strip() for field in _first_line(path).split("\t")]
    user = _column(names, None, ("user_id",), path)
    item = _column(names, None, ("item_id",), path)
    time = _column(names, None, ("timestamp",), path)
    raw = _read(path, sep="\t", header=0, names=names, dtype={user: str, item: str})
    return _finish(raw, path, user, item, time, header_lines=1)


def read_ml100k(path: str | Path) -> pd.DataFrame:
    """MovieLens-100k `u.data`: tab-separated `user item rating timestamp`, no header."""
    path = Path(path)
    raw = _read(path, sep="\t", header=None, names=range(4), dtype={0: str, 1: str})
    return _finish(raw, path, 0, 1, 3, header_lines=0)


def read_ml1m(path: str | Path) -> pd.DataFrame:
    """MovieLens-1M `ratings.dat`: `user::item::rating::timestamp`.

    Split on a single ':' so the C parser can be used; the odd columns must then be empty.
    """
    path = Path(path)
    raw = _read(path, sep=":", header=None, names=range(7), dtype={0: str, 2: str})
    separators = raw[[1, 3, 5]].notna().any(axis=1).to_numpy()
    if separators.any():
        line = int(np.argmax(separators)) + 1
        raise DataFormatError(f"{path}: line {line}: expected 'user::item::rating::timestamp'")
    return _finish(raw, path, 0, 2, 6, header_lines=0)


def read_amazon(path: str | Path) -> pd.DataFrame:
    """Amazon ratings CSV: `user,item,rating,timestamp`, no header."""
    path = Path(path)
    raw = _read(path, sep=",", header=None, names=range(4), dtype={0: str, 1: str})
    return _finish(raw, path, 0, 1, 3, header_lines=0)


def read_csv(
    path: str | Path,
    *,
    user_col: str | None = None,
    item_col: str | None = None,
    time_col: str | None = None,
) -> pd.DataFrame:
    """Comma-separated file with a header; columns found by common names unless given."""
    path = Path(path)
    names = [field.strip().strip('"') for field in _first_line(path).split(",")]
    user = _column(names, user_col, USER_NAMES, path)
    item = _column(names, item_col, ITEM_NAMES, path)
    time = _column(names, time_col, TIME_NAMES, path)
    raw = _read(path, sep=",", header=0, names=names, dtype={user: str, item: str})
    return _finish(raw, path, user, item, time, header_lines=1)


_READERS: dict[str, Callable[[Path], pd.DataFrame]] = {
    "atomic": read_atomic,
    "ml-100k": read_ml100k,
    "ml-1m": read_ml1m,
    "amazon": read_amazon,
}


def _first_line(path: Path) -> str:
    """The first non-blank line, used for sniffing and for reading headers."""
    try:
        with path.open(encoding="utf-8-sig") as handle:
            for line in handle:
                if line.strip():
                    return line.rstrip("\r\n")
    except UnicodeDecodeError as error:
        raise DataFormatError(f"{path}: not UTF-8 text ({error.reason})") from error
    raise DataFormatError(f"{path}: no interactions (empty file)")


def _find(names: list[str], candidates: tuple[str, ...]) -> int | None:
    return next((names.index(name) for name in candidates if name in names), None)


def _column(names: list[str], given: str | None, candidates: tuple[str, ...], path: Path) -> str:
    """The header name matching `given` or else the first candidate, ignoring case."""
    wanted = (given,) if given else candidates
    index = _find([name.lower() for name in names], tuple(name.lower() for name in wanted))
    if index is None:
        raise DataFormatError(f"{path}: no column named {' or '.join(wanted)} in {names}")
    return names[index]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read(path: Path, **options: object) -> pd.DataFrame:
    """pandas' C parser with empty fields as the only missing values, errors naming the file."""
    import pandas as pd

    try:
        return pd.read_csv(
            path, engine="c", keep_default_na=False, na_values=[""], encoding="utf-8-sig", **options
        )
    except pd.errors.EmptyDataError as error:
        raise DataFormatError(f"{path}: no interactions (empty file)") from error
    except ValueError as error:  # ParserError, UnicodeDecodeError, bad dtype conversions
        message = " ".join(str(error).split())
        raise DataFormatError(f"{path}: cannot parse ({message})") from error


def _finish(
    raw: pd.DataFrame, path: Path, user: object, item: object, time: object, header_lines: int
) -> pd.DataFrame:
    """Select and rename the three columns; reject empty files and missing ids."""
    import pandas as pd

    if raw.empty:
        raise DataFormatError(f"{path}: no interactions")
    missing = raw[[user, item]].isna().any(axis=1).to_numpy()
    if missing.any():
        line = int(np.argmax(missing)) + 1 + header_lines
        raise DataFormatError(f"{path}: line {line}: missing user or item id")
    return pd.DataFrame(
        {
            "user": raw[user],
            "item": raw[item],
            "timestamp": _timestamps(raw[time], path, header_lines),
        }
    )


def _timestamps(column: pd.Series, path: Path, header_lines: int) -> np.ndarray:
    """int64 seconds; float text such as "874965758.0" is accepted and floored."""
    import pandas as pd
    from pandas.api.types import is_numeric_dtype

    values = column if is_numeric_dtype(column) else pd.to_numeric(column, errors="coerce")
    if values.dtype.kind in "iu":
        return values.to_numpy(np.int64)
    floats = values.to_numpy(np.float64)
    bad = ~np.isfinite(floats)
    if bad.any():
        row = int(np.argmax(bad))
        value = column.iloc[row]
        problem = "missing" if pd.isna(value) else f"{str(value)!r} is not a finite number"
        raise DataFormatError(f"{path}: line {row + 1 + header_lines}: timestamp {problem}")
    return np.floor(floats).astype(np.int64)
