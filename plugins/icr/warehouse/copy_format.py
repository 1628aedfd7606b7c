"""A normalized chunk as the staging tables take it: PostgreSQL ``COPY`` text, or driver tuples.

Both give the same values: missing text (None, NA, NaN) as NULL, booleans, and timestamps in
UTC (SQLite's as the text :func:`~icr.warehouse.dialect.utc_text` makes). The timestamp columns
are rendered in one vectorised call per chunk rather than per value.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from icr.normalize import STAGE_COLUMNS
from icr.warehouse.dialect import utc_text

_TIME_COLUMNS = ("created_at", "updated_at")

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_COPY_NULL = "\\N"


def _missing(value: Any) -> bool:
    """A text column's missing value as pandas may hold it: None, NA or a float NaN -> SQL NULL."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _copy_column_text(values: list[Any]) -> list[str]:
    """Object column -> COPY text fields: None (or NaN/NA) -> \\N, specials backslash-escaped."""
    nulls: list[int] = []
    if set(map(type, values)) != {str}:
        nulls = [i for i, v in enumerate(values) if _missing(v)]
        out = [v if type(v) is str else ("" if v is None or v is pd.NA else str(v)) for v in values]
        for i in nulls:
            out[i] = ""
    else:
        out = values
    probe = "".join(out)
    if "\\" in probe or "\t" in probe or "\n" in probe or "\r" in probe:
        out = [v.translate(_COPY_ESCAPES) if ("\\" in v or "\t" in v or "\n" in v or "\r" in v) else v
               for v in out]
    if nulls:
        for i in nulls:
            out[i] = _COPY_NULL
    return out


def _iso_timestamps(series: pd.Series) -> list[str] | None:
    """datetime64[us, UTC] -> '2024-03-26T08:47:15.356000' (UTC, "NaT" for missing), in one
    vectorised call; None if a year is outside 1..9999, which only the slow path can report."""
    values = series.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
    ok = ~np.isnat(values)
    if ok.any():
        years = values[ok].astype("datetime64[Y]").astype(np.int64) + 1970
        if years.min() < 1 or years.max() > 9999:
            return None
    return np.datetime_as_string(values, unit="us").tolist()


def _copy_timestamps(series: pd.Series) -> list[str] | None:
    """datetime64[us, UTC] -> COPY text ('2024-03-26T08:47:15.356000+00'); None if out of range."""
    text = _iso_timestamps(series)
    if text is None:
        return None
    return [_COPY_NULL if t == "NaT" else t + "+00" for t in text]


def _sqlite_timestamps(series: pd.Series) -> list[str | None]:
    """datetime64[us, UTC] -> the text :func:`utc_text` gives ('2024-03-26T08:47:15.356000+00:00'),
    vectorised (per-value ``to_pydatetime`` + ``isoformat`` was a third of SQLite staging)."""
    text = _iso_timestamps(series)
    if text is None:
        return [utc_text(ts.to_pydatetime()) if ts is not pd.NaT else None for ts in series]
    return [None if t == "NaT" else t + "+00:00" for t in text]


def copy_text(frame: pd.DataFrame) -> bytes | None:
    """The chunk in PostgreSQL COPY text format (UTF-8), the same values :func:`driver_rows` sends."""
    cols: list[list[str]] = []
    for name in STAGE_COLUMNS:
        series = frame[name]
        if name in _TIME_COLUMNS:
            values = _copy_timestamps(series)
            if values is None:
                return None
        elif name == "organization_is_public":
            values = [_COPY_NULL if v is pd.NA or v is None else ("t" if v else "f")
                      for v in series.astype(object)]
        else:
            values = _copy_column_text(series.tolist())
        cols.append(values)
    if not cols or not cols[0]:
        return b""
    # One join and one encode per row: a single str for the whole chunk would be widened to
    # UCS-4 by one emoji (encoding that is several times slower), while a str per field costs
    # thirteen encodes per row.
    encode = str.encode
    return b"".join([encode("\t".join(row) + "\n") for row in zip(*cols)])


def driver_rows(frame: pd.DataFrame, *, sqlite: bool) -> list[tuple[Any, ...]]:
    """DataFrame chunk → driver tuples with None for missing values."""
    cols: list[list[Any]] = []
    for name in STAGE_COLUMNS:
        series = frame[name]
        if name in _TIME_COLUMNS:
            if sqlite:
                values = _sqlite_timestamps(series)
            else:
                values = [ts.to_pydatetime() if ts is not pd.NaT else None for ts in series]
        elif name == "organization_is_public":
            values = [None if v is pd.NA or v is None else bool(v) for v in series.astype(object)]
        else:
            values = series.tolist()
            if set(map(type, values)) != {str}:  # the common all-text column needs no pass
                values = [None if _missing(v) else v for v in values]
        cols.append(values)
    return list(zip(*cols))
