"""Feed readers against the bundled files and the figures their source documents."""

from __future__ import annotations

import gzip
import hashlib
import re
import zipfile
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pytest

from engines.marketdata import feeds
from engines.marketdata.records import Side, Trade, TradeColumns

# From /work/shared/data/README.md (measured on the original files, not with this code).
SPY_DAY_FIGURES = {
    date(2013, 10, 7): (250_601, 97_062_721),
    date(2013, 10, 8): (451_545, 178_346_557),
    date(2013, 10, 9): (439_677, 165_525_328),
    date(2013, 10, 10): (460_032, 195_649_869),
    date(2013, 10, 11): (285_605, 109_016_858),
}


def test_bundled_files_match_the_notice_sha256() -> None:
    notice = (feeds.DATA_DIR / "NOTICE.md").read_text()
    table = dict(
        (name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", notice, re.M)
    )
    bundled = sorted(p.name for p in feeds.DATA_DIR.iterdir() if p.suffix in (".zip", ".gz"))
    assert sorted(table) == bundled
    assert len(bundled) == 37
    for name in bundled:
        assert hashlib.sha256((feeds.DATA_DIR / name).read_bytes()).hexdigest() == table[name]


def test_lean_days_lists_the_bundled_week() -> None:
    assert feeds.lean_days() == sorted(SPY_DAY_FIGURES)
    assert Path(feeds.__file__).resolve().parent / "data" == feeds.DATA_DIR


def test_lean_ticks_counts_and_shares(spy_ticks: dict[date, TradeColumns]) -> None:
    for day, (n_trades, shares) in SPY_DAY_FIGURES.items():
        ticks = spy_ticks[day]
        assert len(ticks) == n_trades
        assert int(ticks.size.sum()) == shares


def test_lean_first_row_decoded(spy_ticks: dict[date, TradeColumns]) -> None:
    # README example row of 10-07: "14400464,1674100,100,P,20002000,0" = 04:00:00.464 EDT.
    first = spy_ticks[date(2013, 10, 7)].trade(0)
    assert first.event_ns == 1_381_132_800_464_000_000  # 2013-10-07T08:00:00.464Z
    assert first.price == 167.41
    assert first.size == 100
    assert first.exchange == "P"
    assert first.condition == 0x20002000
    assert first.aggressor is None


def _utc_ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 10**9


def test_regular_hours_figures(spy_ticks: dict[date, TradeColumns]) -> None:
    # README: regular-hours (09:30–16:00 New York) trades and shares of 10-07 and 10-11.
    expected = {date(2013, 10, 7): (241_504, 81_975_673), date(2013, 10, 11): (275_322, 89_203_560)}
    for day, (n_trades, shares) in expected.items():
        ticks = spy_ticks[day]
        open_ns = _utc_ns(datetime(day.year, day.month, day.day, 13, 30, tzinfo=UTC))
        close_ns = _utc_ns(datetime(day.year, day.month, day.day, 20, 0, tzinfo=UTC))
        regular = (ticks.event_ns >= open_ns) & (ticks.event_ns < close_ns)
        assert int(regular.sum()) == n_trades
        assert int(ticks.size[regular].sum()) == shares


def test_dst_offsets_from_zoneinfo() -> None:
    ms = np.array([0, 4 * 3_600_000], dtype=np.int64)
    summer = feeds.local_ms_to_utc_ns(date(2013, 10, 7), ms)
    winter = feeds.local_ms_to_utc_ns(date(2013, 12, 2), ms)
    assert summer[1] == int(datetime(2013, 10, 7, 8, tzinfo=UTC).timestamp()) * 10**9
    assert winter[1] == int(datetime(2013, 12, 2, 9, tzinfo=UTC).timestamp()) * 10**9
    # 2013-11-03: EDT until 02:00 local, EST after; 04:00 local = 09:00 UTC.
    switch = feeds.local_ms_to_utc_ns(date(2013, 11, 3), ms)
    assert switch[0] == int(datetime(2013, 11, 3, 4, tzinfo=UTC).timestamp()) * 10**9
    assert switch[1] == int(datetime(2013, 11, 3, 9, tzinfo=UTC).timestamp()) * 10**9


def _zip_with(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("rows.csv", text)
    return path


def test_lean_malformed_lines_counted_with_line_numbers(tmp_path: Path) -> None:
    rows = [
        "14400464,1674100,100,P,20002000,0",
        "14400465,1674100,1400,P,20002000",  # 5 fields
        "14400466,abc,100,P,20002000,0",  # non-integer price
        "14400467,1674200,-5,P,20002000,0",  # negative size
        "14400468,1674300,200,Q,XYZ,0",  # condition not hex
        "14400469,1674400,300,Z,1,0",
    ]
    path = _zip_with(tmp_path, "tick_spy_20131007_trade.zip", "\n".join(rows) + "\n")
    errors = feeds.FeedErrors()
    ticks = feeds.read_lean_trade_ticks(path, errors=errors)
    assert errors.count == 4
    assert sorted(e.line for e in errors.errors) == [2, 3, 4, 5]
    assert {e.source for e in errors.errors} == {path.name}
    assert ticks.sequence.tolist() == [1, 6]
    assert ticks.price.tolist() == [167.41, 167.44]


def test_lean_minute_files(spy_minutes: dict[date, feeds.LeanMinuteBars]) -> None:
    for bars in spy_minutes.values():
        assert 776 <= len(bars.start_ns) <= 883
        assert np.all(np.diff(bars.start_ns) % 60_000_000_000 == 0)
        assert np.all(bars.low <= np.minimum(bars.open, bars.close))
        assert np.all(bars.high >= np.maximum(bars.open, bars.close))
    quotes = feeds.read_lean_minute_quotes(feeds.lean_minute_quote_path(date(2013, 10, 7)))
    assert quotes.bid.shape == (len(quotes.start_ns), 4)
    assert quotes.bid[0].tolist() == [167.27, 167.27, 167.15, 167.25]
    assert quotes.ask_size[0] == 20000


def test_feeds_resolve_data_inside_the_package() -> None:
    source = Path(feeds.__file__).read_text()
    assert "../shared" not in source
    assert "/work/" not in source


def test_binance_feed_counts(binance_events: list[feeds.BinanceEvent]) -> None:
    # /work/shared/data README: 19,904 trades, 73,174 bookTicker, 6,495 depth diffs, 1 snapshot.
    kinds = [type(e).__name__ for e in binance_events]
    assert kinds.count("Trade") == 19_904
    assert kinds.count("Quote") == 73_174
    assert kinds.count("BookDelta") == 6_495
    assert kinds.count("BookSnapshot") == 1
    trades = feeds.binance_trade_columns(binance_events)
    buy_share = float((trades.aggressor == 1).mean())
    assert buy_share == pytest.approx(0.457, abs=0.0005)  # README: taker-buy 45.7 % of trades
    assert float(trades.size.sum()) == pytest.approx(437.9, abs=0.05)


def test_binance_first_trade_fields(binance_events: list[feeds.BinanceEvent]) -> None:
    trade = next(e for e in binance_events if isinstance(e, Trade))
    # Line 4 of btcusdt_20240808.gz: "m":true ⇒ buyer is maker ⇒ SELL aggressor.
    assert trade.aggressor is Side.SELL
    assert (trade.price, trade.size, trade.sequence) == (61837.63, 0.02, 3735683259)
    assert trade.event_ns == 1723161255342 * 1_000_000
    assert trade.receive_ns == 1723161254087896568


def test_binance_malformed_lines_counted(tmp_path: Path) -> None:
    good = (
        b'1 {"stream":"btcusdt@trade","data":{"e":"trade","E":2,"s":"BTCUSDT","t":9,'
        b'"p":"1.00","q":"2.0","T":2,"m":false,"M":true}}\n'
    )
    path = tmp_path / "feed.gz"
    with gzip.open(path, "wb") as out:
        out.write(good + b"not-a-number {}\n" + b'3 {"stream":"x@trade","data":{}}\n')
        out.write(b'4 {"stream":5,"data":{}}\n' + good)
    errors = feeds.FeedErrors()
    events = list(feeds.read_binance_feed([path], errors=errors))
    assert len(events) == 2 and events[0].aggressor is Side.BUY  # type: ignore[union-attr]
    assert errors.count == 3 and [e.line for e in errors.errors] == [2, 3, 4]


def test_simulator_is_deterministic_and_keeps_rate() -> None:
    config = feeds.SimulatorConfig(n_symbols=50, events_per_second=100_000, seed=3)
    first = feeds.SyntheticMarket(config).next_chunk(200_000)
    second = feeds.SyntheticMarket(config).next_chunk(200_000)
    for name in ("event_ns", "symbol_index", "price", "bid", "ask", "size", "is_trade"):
        assert np.array_equal(getattr(first, name), getattr(second, name))
    span_s = (first.event_ns[-1] - config.start_ns) / 1e9
    assert span_s == pytest.approx(2.0, rel=0.02)  # 200k events at 100k/s
    assert np.all(np.diff(first.event_ns) > 0)
    assert np.all(first.ask > first.bid)
    trades = first.is_trade
    expected_price = np.where(first.aggressor > 0, first.ask, first.bid)
    assert np.array_equal(first.price[trades], expected_price[trades])
    assert len(set(first.symbol_index.tolist())) == 50
    records = first.records()
    assert sum(isinstance(r, Trade) for r in records) == int(trades.sum())


def test_simulator_continues_each_symbol_walk() -> None:
    config = feeds.SimulatorConfig(n_symbols=3, events_per_second=10.0)
    market = feeds.SyntheticMarket(config, np.random.default_rng(1))
    chunk = market.next_chunk(1000)
    nxt = market.next_chunk(1000)
    for s in range(3):
        last_bid = chunk.bid[chunk.symbol_index == s][-1]
        first_bid = nxt.bid[nxt.symbol_index == s][0]
        assert abs(round((first_bid - last_bid) * 100)) <= 1  # one step of at most one tick
    assert nxt.event_ns[0] > chunk.event_ns[-1]
