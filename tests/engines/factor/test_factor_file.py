"""Kenneth French's CSV layout read into factor rows by date."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engines.factor.factor_file import FactorFileError, day_of_ns, parse_factor_table

#: The head of F-F_Research_Data_Factors_daily.CSV as French publishes it (values verbatim).
FRENCH_DAILY = """This file was created by CMPT_ME_BEME_RETS_DAILY using the 202309 CRSP database.
The Tbill return is the simple daily rate that, over the number of trading days
in the month, compounds to 1-month TBill rate from Ibbotson and Associates Inc.

,Mkt-RF,SMB,HML,RF
19260701,    0.10,   -0.25,   -0.27,    0.01
19260702,    0.45,   -0.33,   -0.06,    0.01
19260706,    0.17,    0.30,   -0.39,    0.01
19260707,  -99.99,   -0.58,    0.02,    0.01

Copyright 2023 Kenneth R. French
"""


def day(text: str) -> int:
    return int(np.datetime64(text, "D").astype(np.int64))


def test_french_daily_layout_is_read_in_percent() -> None:
    table = parse_factor_table(FRENCH_DAILY)
    assert table.columns == ("Mkt-RF", "SMB", "HML", "RF")
    assert sorted(table.rows) == [
        day(d) for d in ("1926-07-01", "1926-07-02", "1926-07-06", "1926-07-07")
    ]
    assert table.rows[day("1926-07-01")] == (0.10 * 0.01, -0.25 * 0.01, -0.27 * 0.01, 0.01 * 0.01)
    missing = table.rows[day("1926-07-07")]
    assert math.isnan(missing[0]) and missing[1] == -0.58 * 0.01  # -99.99 marks a missing value
    assert (table.first_day(), table.last_day()) == (day("1926-07-01"), day("1926-07-07"))


def test_iso_dates_decimal_values_and_a_named_date_column() -> None:
    table = parse_factor_table(
        "date,MKT,RF\n2020-03-16,-0.12,0.0001\n2020-03-17,0.06,0.0\n", scale=1
    )
    assert table.rows == {day("2020-03-16"): (-0.12, 0.0001), day("2020-03-17"): (0.06, 0.0)}


def test_a_daily_bar_is_matched_by_the_utc_date_of_its_start() -> None:
    open_ns = int(np.datetime64("2020-03-16T13:30", "ns").astype(np.int64))
    assert day_of_ns(open_ns) == day("2020-03-16")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("no table here\n", "no row starts with a date"),
        (",Mkt-RF,RF\n192607,2.96,0.22\n", "monthly"),
        ("20200316,1,2\n", "no header row"),
        (",A,A\n20200316,1,2\n", "distinct columns"),
        (",A,B\n20200316,1\n", "line 2: 2 fields"),
        (",A,B\n20200316,1,2\n20200316,1,2\n", "appears twice"),
        (",A,B\n20200316,1,x\n", "not a number"),
    ],
)
def test_what_is_not_a_factor_table_is_refused_saying_where(text: str, says: str) -> None:
    with pytest.raises(FactorFileError, match=says):
        parse_factor_table(text)
