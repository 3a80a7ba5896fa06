"""Lean daily history: map-file stitching and split/dividend adjustment against outside figures.

Outside references used here:

* the data README (/work/shared/data/README.md, copied into ``data/NOTICE.md``): tickers, date
  ranges, AAPL closes $16.25 on 1998-01-02 and $122.15 on 2021-03-31;
* Lean's own rules (QuantConnect/Lean @ 24863901): ``CorporateFactorProvider.GetScalingFactors``
  (transliterated below as the reference for the factor lookup), ``Dividend.ComputeDistribution``
  (dividend = reference_price × (1 − pf_i / pf_i+1)), the factor-file reference price being the
  raw close of the row's date;
* Apple Inc.'s published split ratios (2:1 2000-06-21, 2:1 2005-02-28, 7:1 2014-06-09,
  4:1 2020-08-31) and quarterly dividends per share as declared (investor.apple.com, "Dividend
  History"), in the currency of the day (pre-split amounts before each split);
* the NYSE session calendar of ``exchange_calendars`` (XNYS), when installed.
"""

from __future__ import annotations

import hashlib
import zipfile
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engines.marketdata import daily
from engines.marketdata.daily import Adjustment, DailyBars

README_TICKERS = "spy qqq iwm eem aapl bac aig goog googl fb wm uso bno".upper().split()


def day(text: str) -> np.datetime64:
    return np.datetime64(text, "D")


def bars(ticker: str, adjustment: str = "total") -> DailyBars:
    return daily.read_daily_bars(ticker, adjustment)


def index_of(b: DailyBars, when: str) -> int:
    (hits,) = np.nonzero(b.date == day(when))
    assert len(hits) == 1, f"{b.symbol} has no bar on {when}"
    return int(hits[0])


# --------------------------------------------------------------------------- files


def test_bundled_daily_files_match_their_sha256sums() -> None:
    sums = (daily.DAILY_DIR / "SHA256SUMS").read_text().splitlines()
    table = {name: digest for digest, name in (line.split("  ") for line in sums)}
    bundled = sorted(
        str(p.relative_to(daily.DAILY_DIR))
        for sub in ("daily", "factor_files", "map_files")
        for p in (daily.DAILY_DIR / sub).iterdir()
    )
    assert sorted(table) == bundled
    assert len(bundled) == 3 * 13
    for name in bundled:
        digest = hashlib.sha256((daily.DAILY_DIR / name).read_bytes()).hexdigest()
        assert digest == table[name], name


def test_daily_tickers_are_the_readme_list_upper_case() -> None:
    assert daily.daily_tickers() == sorted(README_TICKERS)


# --------------------------------------------------------------------------- API


def test_tickers_are_case_insensitive_in_and_upper_case_out() -> None:
    lower, mixed = bars("aapl"), bars(" aApL ")
    assert lower.symbol == mixed.symbol == "AAPL"
    np.testing.assert_array_equal(lower.close, mixed.close)
    assert daily.read_factor_file("spy").symbol == "SPY"
    assert daily.read_map_file("Spy").symbol == "SPY"


@pytest.mark.parametrize("bad", ["MSFT", "", "spy.zip", "../spy", "NB"])
def test_unknown_ticker_is_a_key_error_naming_it(bad: str) -> None:
    for reader in (daily.read_daily_bars, daily.read_factor_file, daily.read_map_file):
        with pytest.raises(daily.UnknownTickerError) as caught:
            reader(bad)
        assert isinstance(caught.value, KeyError)
        assert repr(bad) in str(caught.value)
        assert "SPY" in str(caught.value)  # lists the known ones


def test_unknown_adjustment_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="dividend"):
        daily.read_daily_bars("SPY", "dividend")
    assert len(daily.read_daily_bars("SPY", "TOTAL")) == len(bars("SPY", Adjustment.TOTAL))


def test_results_are_independent_copies() -> None:
    first = bars("SPY", "raw")
    first.close[:] = 0.0
    assert bars("SPY", "raw").close[0] == 97.36  # README row 1998-01-02 close 973600 / 1e4


# --------------------------------------------------------------------------- rows


def test_spy_covers_every_nyse_session_1998_to_2021() -> None:
    """5,849 rows. The README's "5,848" is ``wc -l`` of a file with no final newline (5,848
    newlines, 5,849 rows); XNYS has 5,849 sessions in the range (next test)."""
    spy = bars("SPY", "raw")
    assert len(spy) == 5_849
    assert spy.date[0] == day("1998-01-02")
    assert spy.date[-1] == day("2021-03-31")
    assert np.all(np.diff(spy.date.astype(np.int64)) > 0)


@pytest.mark.filterwarnings("ignore:Series.values returning an ndarray")  # inside the calendar
def test_bar_dates_are_nyse_sessions() -> None:
    xc = pytest.importorskip("exchange_calendars")
    calendar = xc.get_calendar("XNYS", start="1998-01-01", end="2021-12-31")
    sessions = np.array(
        calendar.sessions_in_range("1998-01-02", "2021-03-31").strftime("%Y-%m-%d").tolist(),
        dtype="datetime64[D]",
    )
    assert len(sessions) == 5_849
    for ticker in daily.daily_tickers():
        b = bars(ticker, "raw")
        assert np.isin(b.date, sessions).all(), ticker
    for ticker in ("SPY", "AAPL", "AIG"):  # listed throughout, one ticker throughout
        np.testing.assert_array_equal(bars(ticker, "raw").date, sessions)


def test_aapl_raw_closes_match_the_readme() -> None:
    aapl = bars("AAPL", "raw")
    assert aapl.close[0] == 16.25
    assert aapl.close[-1] == 122.15


@pytest.mark.parametrize("ticker", sorted(README_TICKERS))
def test_every_ticker_loads_in_every_mode(ticker: str) -> None:
    modes = {mode: bars(ticker, mode) for mode in Adjustment}
    raw = modes[Adjustment.RAW]
    assert len(raw) > 1_000
    first = daily.read_map_file(ticker).first_date
    assert raw.date[0] >= first
    for b in modes.values():
        assert b.symbol == ticker
        np.testing.assert_array_equal(b.date, raw.date)
        assert np.all(np.diff(b.date.astype(np.int64)) > 0)
        for column in (b.open, b.high, b.low, b.close, b.volume):
            assert column.dtype == np.float64 and len(column) == len(b)
            assert np.isfinite(column).all()
        assert (b.low > 0).all()
        assert (b.volume >= 0).all()
        assert (b.high >= np.maximum(b.open, b.close) * (1 - 1e-12)).all()
        assert (b.low <= np.minimum(b.open, b.close) * (1 + 1e-12)).all()


# --------------------------------------------------------------------------- map files


@pytest.mark.parametrize("ticker", sorted(README_TICKERS))
def test_factor_reference_prices_are_the_closes_returned(ticker: str) -> None:
    """Lean's reference price is the raw close of the factor row's date: every one that falls on
    a returned bar agrees with it, so the map-file stitching picked this security's rows."""
    factors = daily.read_factor_file(ticker)
    raw = bars(ticker, "raw")
    with_reference = factors.reference_price > 1  # the first row carries 1, the last 0
    if not with_reference.any():
        pytest.skip(f"{ticker}: no split or dividend, no reference price")
    dates = factors.date[with_reference]
    on_bar = np.isin(dates, raw.date)
    assert on_bar.sum() >= 1
    closes = raw.close[np.searchsorted(raw.date, dates[on_bar])]
    np.testing.assert_allclose(closes, factors.reference_price[with_reference][on_bar], atol=0.006)


def _file_rows(file_ticker: str) -> list[str]:
    with zipfile.ZipFile(daily.DAILY_DIR / "daily" / f"{file_ticker}.zip") as archive:
        (name,) = archive.namelist()
        return archive.read(name).decode().splitlines()


def _file_close(file_ticker: str, when: str) -> float:
    for line in _file_rows(file_ticker):
        if line.startswith(when.replace("-", "")):
            return int(line.split(",")[4]) / 10_000
    raise AssertionError(f"{when} not in {file_ticker}.zip")


def test_rows_of_another_security_under_the_same_ticker_are_dropped() -> None:
    """bac.zip before 1998-10-01 (ticker then "nb" in BAC's map) is another company: its close
    disagrees with BAC's factor-file reference price; wm.zip before 2009-08-05 (map: "wmi") is
    Washington Mutual, closing at $0.16 on 2008-09-26."""
    bac_factors = daily.read_factor_file("BAC")
    row = int(np.nonzero(bac_factors.date == day("1998-03-03"))[0][0])
    assert abs(_file_close("bac", "1998-03-03") - bac_factors.reference_price[row]) > 5
    assert bars("BAC", "raw").date[0] == day("1998-10-01")
    assert _file_close("wm", "2008-09-26") == 0.16
    assert bars("WM", "raw").date[0] == day("2009-08-05")


@pytest.mark.parametrize("ticker", ["BNO", "EEM", "FB", "USO"])
def test_rows_before_the_listing_are_dropped(ticker: str) -> None:
    map_file = daily.read_map_file(ticker)
    assert bars(ticker, "raw").date[0] == map_file.first_date
    first_in_file = _file_rows(ticker.lower())[0][:8]
    assert (
        day(f"{first_in_file[:4]}-{first_in_file[4:6]}-{first_in_file[6:]}") < map_file.first_date
    )


def test_googl_history_before_the_2014_share_split_comes_from_goog_zip() -> None:
    googl = bars("GOOGL", "raw")
    assert googl.date[0] == day("2004-08-19")  # README: goog file from 2004-08-19
    factors = daily.read_factor_file("GOOGL")
    row = int(np.nonzero(factors.date == day("2014-04-02"))[0][0])
    assert googl.close[index_of(googl, "2014-04-02")] == factors.reference_price[row]
    assert googl.close[index_of(googl, "2014-04-02")] == _file_close("goog", "2014-04-02")
    # class C (GOOG) starts once its own ticker is in force; "goocv" days are not bundled
    assert bars("GOOG", "raw").date[0] == day("2014-04-03")


def test_ticker_on_follows_lean_get_mapped_symbol() -> None:
    qqq = daily.read_map_file("QQQ")
    dates = np.array(
        ["1999-03-09", "1999-03-10", "2004-11-30", "2004-12-01", "2011-03-22", "2011-03-23"],
        dtype="datetime64[D]",
    )
    assert qqq.ticker_on(dates).tolist() == ["", "qqq", "qqq", "qqqq", "qqqq", "qqq"]
    assert qqq.ticker_on(np.array(["2051-01-01"], dtype="datetime64[D]")).tolist() == [""]


# --------------------------------------------------------------------------- factors


def lean_get_scaling_factors(factors: daily.FactorFile, search: date) -> tuple[float, float]:
    """Transliteration of Lean ``CorporateFactorProvider.GetScalingFactors``."""
    found = (1.0, 1.0)
    for i in reversed(range(len(factors))):
        if factors.date[i].astype(date) < search:
            break
        found = (float(factors.price_factor[i]), float(factors.split_factor[i]))
    return found


@given(
    ticker=st.sampled_from(sorted(README_TICKERS)),
    when=st.dates(min_value=date(1997, 1, 1), max_value=date(2052, 1, 1)),
)
def test_factor_lookup_matches_lean(ticker: str, when: date) -> None:
    factors = daily.read_factor_file(ticker)
    price, split = factors.factors_on(np.array([when], dtype="datetime64[D]"))
    assert (float(price[0]), float(split[0])) == lean_get_scaling_factors(factors, when)


@pytest.mark.parametrize("ticker", sorted(README_TICKERS))
def test_last_factor_row_is_one_and_recent_bars_are_unadjusted(ticker: str) -> None:
    factors = daily.read_factor_file(ticker)
    assert factors.date[-1] == day("2050-12-31")
    assert factors.price_factor[-1] == 1.0 and factors.split_factor[-1] == 1.0
    raw, total = bars(ticker, "raw"), bars(ticker, "total")
    recent = raw.date > factors.date[-2]
    assert recent.any()
    for name in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(total, name)[recent], getattr(raw, name)[recent])


@pytest.mark.parametrize("ticker", sorted(README_TICKERS))
def test_total_is_split_times_price_factor_and_volume_uses_the_split_factor(ticker: str) -> None:
    raw, split, total = (bars(ticker, mode) for mode in ("raw", "split", "total"))
    price_factor, split_factor = daily.read_factor_file(ticker).factors_on(raw.date)
    np.testing.assert_allclose(split.close, raw.close * split_factor, rtol=1e-15)
    np.testing.assert_allclose(total.close, split.close * price_factor, rtol=1e-15)
    np.testing.assert_array_equal(split.volume, np.rint(raw.volume / split_factor))
    np.testing.assert_array_equal(total.volume, split.volume)


# --------------------------------------------------------------------------- AAPL splits

APPLE_SPLITS = {"2000-06-21": 2, "2005-02-28": 2, "2014-06-09": 7, "2020-08-31": 4}


@pytest.mark.parametrize(("ex_date", "ratio"), APPLE_SPLITS.items())
def test_aapl_split_days(ex_date: str, ratio: int) -> None:
    raw, split, total = (bars("AAPL", mode) for mode in ("raw", "split", "total"))
    ex = index_of(raw, ex_date)
    before = ex - 1
    # Lean dates the factor row on the last session before the ex-date, with the old factor
    factors = daily.read_factor_file("AAPL")
    row = int(np.nonzero(factors.date == raw.date[before])[0][0])
    assert factors.split_factor[row] / factors.split_factor[row + 1] == pytest.approx(
        1 / ratio, rel=1e-5
    )
    # raw close jumps by about the split ratio; adjusted closes move by a day's return
    raw_jump = raw.close[before] / raw.close[ex]
    assert abs(np.log(raw_jump / ratio)) < 0.11
    for adjusted in (split, total):
        day_return = adjusted.close[ex] / adjusted.close[before]
        assert abs(np.log(day_return)) < 0.11
        np.testing.assert_allclose(day_return, raw.close[ex] / raw.close[before] * ratio, rtol=2e-5)
        # the session before the ex-date carries the same factors as the one before it
        np.testing.assert_allclose(
            adjusted.close[before] / adjusted.close[before - 1],
            raw.close[before] / raw.close[before - 1],
            rtol=1e-14,
        )
    # volume in today's shares: the pre-split volume is multiplied by the later splits' ratios
    later = np.prod([r for d, r in APPLE_SPLITS.items() if d > ex_date]) * ratio
    assert split.volume[before] == pytest.approx(raw.volume[before] * later, rel=1e-5)


# --------------------------------------------------------------------------- dividends

#: Apple quarterly dividend per share by ex-date, as declared (pre-split dollars before 2014-06-09
#: and 2020-08-31): $2.65 from 2012, $3.05 from 2013-05, $3.29 2014-05, then $0.47 (= 3.29 / 7),
#: $0.52, $0.57, $0.63, $0.73, $0.77, $0.82, and $0.205 (= 0.82 / 4) after the 2020 split.
APPLE_DIVIDENDS = {
    "2012-08-09": 2.65, "2012-11-07": 2.65, "2013-02-07": 2.65,
    "2013-05-09": 3.05, "2013-08-08": 3.05, "2013-11-06": 3.05, "2014-02-06": 3.05,
    "2014-05-08": 3.29,
    "2014-08-07": 0.47, "2014-11-06": 0.47, "2015-02-05": 0.47,
    "2015-05-07": 0.52, "2015-08-06": 0.52, "2015-11-05": 0.52, "2016-02-04": 0.52,
    "2016-05-05": 0.57, "2016-08-04": 0.57, "2016-11-03": 0.57, "2017-02-09": 0.57,
    "2017-05-11": 0.63, "2017-08-10": 0.63, "2017-11-10": 0.63, "2018-02-09": 0.63,
    "2018-05-11": 0.73, "2018-08-10": 0.73, "2018-11-08": 0.73, "2019-02-08": 0.73,
    "2019-05-10": 0.77, "2019-08-09": 0.77, "2019-11-07": 0.77, "2020-02-07": 0.77,
    "2020-05-08": 0.82, "2020-08-07": 0.82,
    "2020-11-06": 0.205, "2021-02-05": 0.205,
}  # fmt: skip


def dividend_rows(ticker: str) -> list[tuple[int, int]]:
    """(factor row, bar index of the ex-date) for each price-factor change on a returned bar."""
    factors = daily.read_factor_file(ticker)
    raw = bars(ticker, "raw")
    out = []
    for i in range(len(factors) - 1):
        if factors.price_factor[i] == factors.price_factor[i + 1]:
            continue
        hits = np.nonzero(raw.date == factors.date[i])[0]
        if len(hits) and hits[0] + 1 < len(raw):
            out.append((i, int(hits[0]) + 1))
    return out


def test_aapl_dividends_implied_by_the_factor_rows_are_apples() -> None:
    """Lean ``Dividend.ComputeDistribution``: reference_price × (1 − pf_i / pf_i+1)."""
    factors = daily.read_factor_file("AAPL")
    raw = bars("AAPL", "raw")
    implied = {
        str(raw.date[ex]): factors.reference_price[i]
        * (1 - factors.price_factor[i] / factors.price_factor[i + 1])
        for i, ex in dividend_rows("AAPL")
    }
    assert sorted(implied) == sorted(APPLE_DIVIDENDS)
    for ex_date, amount in APPLE_DIVIDENDS.items():
        assert implied[ex_date] == pytest.approx(amount, abs=0.0006), ex_date


@pytest.mark.parametrize("ticker", ["AAPL", "SPY", "QQQ", "IWM", "BAC", "AIG", "WM"])
def test_total_return_on_ex_dates_adds_the_dividend_yield(ticker: str) -> None:
    """On an ex-date the total-adjusted return is the raw close-to-close return plus the dividend
    yield y = D / C_prev = 1 − pf_i / pf_i+1 (dividend reinvested at the ex-date close):
    1 + r_total = (1 + r_raw) / (1 − y), i.e. r_total = r_raw + y + y (r_raw + y) / (1 − y)."""
    factors = daily.read_factor_file(ticker)
    raw, total = bars(ticker, "raw"), bars(ticker, "total")
    split = bars(ticker, "split")
    rows = dividend_rows(ticker)
    assert len(rows) >= 20
    for i, ex in rows:
        dividend = factors.reference_price[i] * (
            1 - factors.price_factor[i] / factors.price_factor[i + 1]
        )
        yield_ = dividend / raw.close[ex - 1]
        r_raw = raw.close[ex] / raw.close[ex - 1] - 1
        r_total = total.close[ex] / total.close[ex - 1] - 1
        assert 0 < yield_ < 0.2  # AIG 2011-01-19: $8.42 on $51.20 (the warrant distribution)
        assert 1 + r_total == pytest.approx((1 + r_raw) / (1 - yield_), rel=1e-9)
        assert (
            abs(r_total - (r_raw + yield_)) <= yield_ * (abs(r_raw) + yield_) / (1 - yield_) + 1e-12
        )
        # the split-adjusted series leaves the dividend out
        assert split.close[ex] / split.close[ex - 1] - 1 == pytest.approx(r_raw, rel=1e-9)


# --------------------------------------------------------------------------- served bars

_NEW_YORK = ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    "moment",
    [
        "2013-11-03T05:59:59+00:00",  # 01:59:59 EDT, the hour before the clocks go back
        "2013-11-03T06:00:00+00:00",  # 01:00 EST
        "2014-01-01T04:59:59+00:00",  # 23:59:59 EST on New Year's Eve
        "2014-03-09T06:59:59+00:00",  # 01:59:59 EST, spring forward next
        "2014-07-01T03:59:59+00:00",  # 23:59:59 EDT, 30 June
        "2014-07-01T04:00:00+00:00",  # midnight EDT, 1 July
        "2013-12-31T04:30:00+00:00",  # 23:30 EST, 30 December: the hour the zone decides
    ],
)
def test_new_york_dates_follow_the_zone_database(moment: str) -> None:
    when = datetime.fromisoformat(moment)
    ns = int(when.timestamp()) * 10**9
    (found,) = daily.new_york_dates(np.array([ns])).tolist()
    assert found == when.astimezone(_NEW_YORK).date()


@given(st.lists(st.integers(0, 4_102_444_800 * 10**9), min_size=1, max_size=50))  # to 2100
def test_new_york_dates_equal_zoneinfo_everywhere(times_ns: list[int]) -> None:
    expected = [
        datetime.fromtimestamp(t // 10**9, UTC).astimezone(_NEW_YORK).date() for t in times_ns
    ]
    assert daily.new_york_dates(np.array(times_ns, dtype=np.int64)).tolist() == expected


def test_a_served_daily_bar_spans_its_session_dates_utc_day() -> None:
    dates = np.array(["1998-01-02", "2014-06-09", "2020-08-31"], dtype="datetime64[D]")
    start = daily.session_start_ns(dates)
    assert start.tolist() == [
        int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()) * 10**9
        for d in dates.tolist()
    ]
    # the New York date of the bar's last instant is the session date (the factor lookup's date)
    assert (daily.new_york_dates(start + daily.DAY_NS - 1) == dates).all()


def test_scaling_is_what_read_daily_bars_applies_and_ones_without_factors() -> None:
    raw = bars("AAPL", "raw")
    for mode in ("split", "total"):
        scale = daily.scaling("aapl", raw.date, mode)
        adjusted = bars("AAPL", mode)
        assert np.array_equal(scale.prices(raw.close), adjusted.close)
        assert np.array_equal(scale.volume(raw.volume), adjusted.volume)
    total = daily.scaling("AAPL", raw.date, "total")
    assert np.array_equal(total.dollar_volume(np.ones(len(raw))), total.price / total.split)
    for symbol, mode in (("BTCUSDT", "total"), ("AAPL", "raw")):
        ones = daily.scaling(symbol, raw.date, mode)
        assert (ones.price == 1).all() and (ones.split == 1).all()
    with pytest.raises(ValueError):
        daily.scaling("AAPL", raw.date, "dividend")
