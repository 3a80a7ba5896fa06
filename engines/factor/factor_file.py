"""Factor returns from a file, pure: Kenneth French's CSV layout, read into rows by date.

The Fama–French files (``F-F_Research_Data_Factors_daily.CSV``,
``F-F_Research_Data_5_Factors_2x3_daily.CSV``, ``F-F_Momentum_Factor_daily.CSV``) hold a few
lines of free text, then a header row (an empty first field, then the column names:
``,Mkt-RF,SMB,HML,RF``), then one row per date (``19260701,    0.10,   -0.25,   -0.27,    0.01``)
in percent, then free text again. ``parse_factor_table`` reads the first such table: the header
is the row just above the first row whose first field is a date (``YYYYMMDD`` or
``YYYY-MM-DD``), and the table ends at the first row whose first field is not one. A file of
your own in the same layout (a first header field such as ``date`` is fine) works the same;
``scale`` turns percent into returns (0.01) or keeps decimals (1).

French marks a missing value ``-99.99`` or ``-999``: such a value reads as NaN (a bar on that
date is not regressed). Monthly files (``YYYYMM``) are refused: a row is one day.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

_DATE = re.compile(r"(\d{4})-?(\d{2})-?(\d{2})")
#: French's markers of a missing value.
MISSING = (-99.99, -999.0)
NS_PER_DAY = 86_400_000_000_000


class FactorFileError(ValueError):
    """The text is not a factor table this reader understands (the message says where)."""


@dataclass(frozen=True, slots=True)
class FactorTable:
    """Factor returns by date: ``rows[day]`` (days since 1970-01-01, UTC) holds one value per
    column of ``columns``, already scaled; NaN where the file marks a value missing."""

    columns: tuple[str, ...]
    rows: dict[int, tuple[float, ...]]

    def first_day(self) -> int:
        return min(self.rows)

    def last_day(self) -> int:
        return max(self.rows)


def _day(field: str) -> int | None:
    """Days since the epoch of ``YYYYMMDD`` / ``YYYY-MM-DD``; ``None`` when not a date."""
    match = _DATE.fullmatch(field.strip())
    if match is None:
        return None
    try:
        date = np.datetime64("-".join(match.groups()), "D")
    except ValueError:
        return None
    return int(date.astype(np.int64))


def day_of_ns(time_ns: int) -> int:
    """The UTC date (days since the epoch) of a time in ns: a daily bar's date from its start."""
    return time_ns // NS_PER_DAY


def parse_factor_table(text: str, *, scale: float = 0.01) -> FactorTable:
    """The first table of ``text`` (see the module docstring); values multiplied by ``scale``."""
    lines = text.splitlines()
    first = next(
        (i for i, line in enumerate(lines) if _day(line.split(",", 1)[0]) is not None), None
    )
    if first is None:
        raise FactorFileError(
            "no row starts with a date (YYYYMMDD or YYYY-MM-DD; a monthly YYYYMM file is not read)"
        )
    if first == 0 or not lines[first - 1].strip():
        raise FactorFileError(f"line {first + 1}: the first dated row has no header row above it")
    header = [name.strip() for name in lines[first - 1].split(",")]
    columns = tuple(header[1:])
    if not columns or not all(columns) or len(set(columns)) != len(columns):
        raise FactorFileError(f"line {first}: header {header!r} must name distinct columns")
    rows: dict[int, tuple[float, ...]] = {}
    for number, line in enumerate(lines[first:], start=first + 1):
        fields = line.split(",")
        day = _day(fields[0])
        if day is None:
            break
        if len(fields) != len(header):
            raise FactorFileError(
                f"line {number}: {len(fields)} fields, the header has {len(header)}"
            )
        if day in rows:
            raise FactorFileError(f"line {number}: date {fields[0].strip()} appears twice")
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            raise FactorFileError(f"line {number}: a value is not a number: {line!r}") from None
        rows[day] = tuple(
            math.nan if v in MISSING or not math.isfinite(v) else v * scale for v in values
        )
    return FactorTable(columns, rows)
