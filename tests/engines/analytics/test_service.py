"""Analytics engine on a MemoryBus with real PostgreSQL: Lean's SPY minute bars (and a second
symbol, and a paper account's equity) in, ``analytics.<key>`` out; every published statistic set
equals the core's batch function (``compute_stats``) on the prefix of the same returns, the final
one equals empyrical; stored sets are served by REST; bad input is counted, never fatal."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import empyrical
import numpy as np
import pytest
from falcon import testing

from engines.analytics import core
from engines.analytics.api import routes
from engines.analytics.service import (
    BENCHMARK_FIELDS,
    STATS_FIELDS,
    AnalyticsConfig,
    AnalyticsEngine,
)
from engines.marketdata.feeds import lean_minute_trade_path, read_lean_minute_trades
from engines.shell import ConfigError, create_app, load_config
from protocol.records import AccountState, Bar, encode
from realtime.bus import MemoryBus
from realtime.clock import SystemClock
from tests.support import TEST_DSN, migrated_schema, until

MIN = 60_000_000_000
DAYS = (date(2013, 10, 7), date(2013, 10, 8))
#: October 2013 is EDT (UTC−4): the regular session is 13:30–20:00 UTC.
SESSION_UTC = (13 * 60 + 30, 20 * 60)
MINUTES_A_YEAR = 252 * 390


def regular(start_ns: np.ndarray) -> np.ndarray:
    minute = (start_ns // MIN) % 1440
    return (minute >= SESSION_UTC[0]) & (minute < SESSION_UTC[1])


def bar(symbol: str, start_ns: int, close: float, spec: str = "1m") -> dict[str, Any]:
    return encode(
        Bar(symbol=symbol, spec=spec, start_ns=start_ns, end_ns=start_ns + MIN, open=close,
            high=close, low=close, close=close, volume=100.0, dollar_volume=100.0 * close,
            trades=1)
    )  # fmt: skip


def account(event_ns: int, equity: float) -> dict[str, Any]:
    e = Decimal(f"{equity:.2f}")
    zero = Decimal(0)
    return encode(
        AccountState(account="paper", currency="USD", starting_cash=Decimal(1_000_000), cash=e,
                     equity=e, realized_pnl=e - 1_000_000, unrealized_pnl=zero, fees=zero,
                     gross_exposure=zero, net_exposure=zero, event_ns=event_ns)
    )  # fmt: skip


def same(x: float | None, y: float, rel: float = 1e-9, abs_tol: float = 1e-12) -> bool:
    """Streaming vs batch (sequential vs pairwise sums); NaN and ±inf are published as null."""
    if x is None:
        return not math.isfinite(y)
    return abs(x - y) <= rel * max(abs(x), abs(y)) + abs_tol


def assert_stats(got: dict[str, Any], want: core.Stats, fields: tuple[str, ...]) -> None:
    values = want._asdict()
    for name in fields:
        assert same(got[name], values[name]), f"{name}: published {got[name]} != {values[name]}"


@pytest.fixture(scope="module")
def spy() -> tuple[np.ndarray, np.ndarray]:
    """Two days of Lean SPY minute trade bars (extended hours included): start ns, close."""
    days = [read_lean_minute_trades(lean_minute_trade_path(d)) for d in DAYS]
    return np.concatenate([d.start_ns for d in days]), np.concatenate([d.close for d in days])


@pytest.fixture(scope="module")
def pg_schema() -> Iterator[str]:
    with migrated_schema("nautilus_analytics") as schema:
        yield schema


@pytest.fixture
async def engine(pg_schema: str) -> AsyncIterator[AnalyticsEngine]:
    clock = SystemClock()
    config = AnalyticsConfig(db_dsn=TEST_DSN, db_schema=pg_schema)
    engine = AnalyticsEngine(config, bus=MemoryBus(clock=clock, max_pending=1 << 16), clock=clock)
    await engine.start()
    yield engine
    await engine.stop()


async def test_buy_and_hold_stream_equals_batch_and_empyrical(
    engine: AnalyticsEngine, spy: tuple[np.ndarray, np.ndarray]
) -> None:
    start, close = spy
    rng = np.random.default_rng(11)
    # AAA: SPY-like prices on every regular minute but each 7th, so some returns span 2 minutes
    # and miss their benchmark pair; AAA's bar is published before SPY's on every other minute.
    session = regular(start)
    aaa_start = start[session][np.arange(session.sum()) % 7 != 3]
    aaa_close = 50.0 * np.exp(np.cumsum(rng.normal(0.0, 8e-4, aaa_start.size)))
    aaa = dict(zip(aaa_start.tolist(), aaa_close.tolist(), strict=True))
    n_spy = int(session.sum()) - 1
    n_aaa = aaa_start.size - 1
    assert n_spy == 2 * 390 - 1
    sub = engine.bus.subscribe("analytics.*")
    for i, (t, c) in enumerate(zip(start.tolist(), close.tolist(), strict=True)):
        first = [("AAA", aaa[t])] if t in aaa and i % 2 else []
        later = [("AAA", aaa[t])] if t in aaa and not i % 2 else []
        for symbol, price in [*first, ("SPY", c), *later]:
            await engine.bus.publish(f"bars.1m.{symbol}", bar(symbol, t, price), event_ns=t)
    # bad input: not a bar, a bad close, another spec on this channel, a late bar, a symbol
    # that cannot name a channel
    await engine.bus.publish("bars.1m.SPY", {"s": "SPY", "c": "x"})
    await engine.bus.publish("bars.1m.SPY", bar("SPY", int(start[-1]) + MIN, -1.0))
    await engine.bus.publish("bars.1m.SPY", bar("SPY", int(start[-1]) + MIN, 1.0, spec="5m"))
    await engine.bus.publish("bars.1m.SPY", bar("SPY", int(aaa_start[5]), 1.0))
    await engine.bus.publish("bars.1m.SPY", bar("BRK.B", int(aaa_start[5]), 1.0))
    published: list[dict[str, Any]] = []
    while len(published) < n_spy + n_aaa:
        published += [e.payload for e in await asyncio.wait_for(sub.next_batch(4096), 20)]
    await until(lambda: sum(engine.health()["bad_input"].get("bars.1m.*", {}).values()) == 5)  # type: ignore[attr-defined]
    assert engine.health()["bad_input"]["bars.1m.*"] == {  # type: ignore[index]
        "wrong_type": 1, "bad_close": 1, "wrong_spec": 1, "late_bar": 1, "bad_key": 1,
    }  # fmt: skip
    # the extended-hours bars (Lean's file has 828 a day) are skipped, and only they
    assert engine.outside_session._value.get() == (~session).sum() > 2 * 400

    # the returns, by the test's own session rule and close-to-close
    spy_r = close[session][1:] / close[session][:-1] - 1.0
    aaa_r = aaa_close[1:] / aaa_close[:-1] - 1.0
    params = core.AnalyticsParams(period="minute")
    assert params.periods_per_year == MINUTES_A_YEAR
    by_key: dict[str, list[dict[str, Any]]] = {"SPY": [], "AAA": []}
    for p in published:
        by_key[p["key"]].append(p)
    assert [p["stats"]["n"] for p in by_key["SPY"]] == list(range(1, n_spy + 1))
    assert [p["stats"]["n"] for p in by_key["AAA"]] == list(range(1, n_aaa + 1))
    for k, p in enumerate(by_key["SPY"]):
        assert_stats(p["stats"], core.compute_stats(spy_r[: k + 1], None, params), STATS_FIELDS)
        assert p["periods_per_year"] == MINUTES_A_YEAR and p["period"] == "minute"
    # AAA vs SPY: pairs over the same interval (same previous and same bar start); AAA's
    # returns spanning a missing minute have none. A pair whose SPY bar was published after
    # AAA's shows from AAA's next publication on.
    spy_starts = start[session].tolist()
    spy_interval = dict(zip(spy_starts[1:], spy_starts[:-1], strict=True))  # start -> previous
    spy_by_start = dict(zip(spy_starts[1:], spy_r.tolist(), strict=True))
    index_of = {t: i for i, t in enumerate(start.tolist())}
    pairs: list[tuple[float, float]] = []
    for k, (prev, t) in enumerate(
        zip(aaa_start[:-1].tolist(), aaa_start[1:].tolist(), strict=True)
    ):
        paired = spy_interval.get(t) == prev
        if paired:
            pairs.append((aaa_r[k], spy_by_start[t]))
        shown = len(pairs) - (paired and index_of[t] % 2 == 1)
        p = by_key["AAA"][k]
        assert_stats(p["stats"], core.compute_stats(aaa_r[: k + 1], None, params), STATS_FIELDS)
        assert p["benchmark"]["n"] == shown, k
        if shown >= 2:
            shown_r, shown_b = np.array(pairs[:shown]).T
            ref = core.compute_stats(shown_r, shown_b, params)
            assert_stats(p["benchmark"], ref, BENCHMARK_FIELDS)
    pr, pb = np.array(pairs).T
    assert 0.7 * n_aaa < pr.size < n_aaa
    relative = engine.series["AAA"].relative
    assert relative is not None and relative.n == pr.size  # the last pair, after the last publish
    assert engine.health()["keys"]["AAA"]["unpaired"] == n_aaa - pr.size  # type: ignore[index]

    # the outside reference on the whole series
    last = by_key["SPY"][-1]["stats"]
    ann = MINUTES_A_YEAR
    for name, ref in (
        ("sharpe_ratio", empyrical.sharpe_ratio(spy_r, annualization=ann)),
        ("annual_volatility", empyrical.annual_volatility(spy_r, annualization=ann)),
        ("annual_return", empyrical.annual_return(spy_r, annualization=ann)),
        ("sortino_ratio", empyrical.sortino_ratio(spy_r, annualization=ann)),
        ("max_drawdown", empyrical.max_drawdown(spy_r)),
        ("cum_return", empyrical.cum_returns_final(spy_r)),
        ("value_at_risk", empyrical.value_at_risk(spy_r)),
        ("conditional_value_at_risk", empyrical.conditional_value_at_risk(spy_r)),
        ("stability", empyrical.stability_of_timeseries(spy_r)),
        ("tail_ratio", empyrical.tail_ratio(spy_r)),
    ):
        assert same(last[name], float(ref)), name
    shown = by_key["AAA"][-1]["benchmark"]
    m = shown["n"]
    assert same(shown["beta"], float(empyrical.beta(pr[:m], pb[:m])))
    assert same(shown["alpha"], float(empyrical.alpha(pr[:m], pb[:m], annualization=ann)))
    assert same(shown["information_ratio"], float(empyrical.excess_sharpe(pr[:m], pb[:m])))

    async with testing.ASGIConductor(
        create_app(engine, version="t", routes=routes(engine))
    ) as client:
        latest = await client.simulate_get("/analytics/SPY")
        assert latest.status_code == 200 and latest.json == by_key["SPY"][-1]
        await until(lambda: engine.storage.store.stats().rows_written >= len(published))
        items: list[dict[str, Any]] = []
        cursor: str | None = ""
        while cursor is not None:
            params_q = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            page = (await client.simulate_get("/analytics/AAA/history", params=params_q)).json
            items += page["items"]
            cursor = page["next_cursor"]
        # PostgreSQL's jsonb keeps the decimal digits: a huge float may come back as an int
        assert len(items) == len(by_key["AAA"])
        for stored, sent in zip(items, by_key["AAA"], strict=True):
            assert stored.keys() == sent.keys() and stored["event_ns"] == sent["event_ns"]
            for section in ("stats", "benchmark"):
                for name, value in sent[section].items():
                    assert value == stored[section][name] or same(value, stored[section][name], 0)
        missing = await client.simulate_get("/analytics/QQQ")
        assert missing.status_code == 404 and missing.json["error"]["parameter"] == "key"


async def test_account_equity_sampled_per_minute(engine: AnalyticsEngine) -> None:
    day = 1381152600 * 1_000_000_000  # 2013-10-07 09:30 New York
    rng = np.random.default_rng(3)
    # 60 minutes, 1–4 states each at random seconds; the minute's last equity counts
    equity = 1_000_000.0
    last_of_minute = []
    states: list[tuple[int, float]] = []
    for minute in range(60):
        for s in np.sort(rng.choice(60, rng.integers(1, 5), replace=False)):
            equity *= 1.0 + rng.normal(0.0, 5e-4)
            states.append((day + minute * MIN + int(s) * 1_000_000_000, round(equity, 2)))
        last_of_minute.append(states[-1][1])
    for t, e in states:
        await engine.bus.publish("pnl.paper", account(t, e), event_ns=t)
    await engine.bus.publish("pnl.paper", account(states[0][0], 1.0))  # late: counted
    await engine.bus.publish("pnl.paper", account(states[-1][0], -5.0))  # bad equity
    closes = np.array(last_of_minute)
    r = closes[1:] / closes[:-1] - 1.0
    n = r.size - 1  # the last minute's return waits for a later minute's first state
    await until(lambda: engine.health()["keys"].get("paper", {}).get("n") == n)  # type: ignore[attr-defined]
    await until(lambda: sum(engine.health()["bad_input"].get("pnl.*", {}).values()) == 2)  # type: ignore[attr-defined]
    assert engine.health()["bad_input"]["pnl.*"] == {"late_state": 1, "bad_equity": 1}  # type: ignore[index]
    async with testing.ASGIConductor(
        create_app(engine, version="t", routes=routes(engine))
    ) as client:
        latest = (await client.simulate_get("/analytics/paper")).json
        assert latest["source"] == "pnl" and latest["stats"]["n"] == n
        assert latest["from_ns"] == day + MIN  # the first minute's close
        assert latest["event_ns"] == day + n * MIN + MIN
        want = core.compute_stats(r[:n], None, core.AnalyticsParams(period="minute"))
        assert_stats(latest["stats"], want, STATS_FIELDS)
        assert same(latest["stats"]["sharpe_ratio"],
                    float(empyrical.sharpe_ratio(r[:n], annualization=MINUTES_A_YEAR)))  # fmt: skip


async def test_state_is_bounded_and_rebuilt_from_the_newest_half() -> None:
    clock = SystemClock()
    config = AnalyticsConfig(max_returns=10, benchmark="")
    engine = AnalyticsEngine(config, bus=MemoryBus(clock=clock), clock=clock)
    await engine.start()
    try:
        t0 = 1381152600 * 1_000_000_000
        prices = 100.0 * np.exp(np.cumsum(np.random.default_rng(5).normal(0, 1e-3, 24)))
        for i, p in enumerate(prices.tolist()):
            await engine.bus.publish("bars.1m.SPY", bar("SPY", t0 + i * MIN, p))
        await until(lambda: engine.health()["keys"].get("SPY", {}).get("n", 0) >= 8)  # type: ignore[attr-defined]
        await until(lambda: len(engine.series["SPY"].returns) == 8 and
                    engine.series["SPY"].times[-1] == t0 + 24 * MIN)  # fmt: skip
        r = prices[1:] / prices[:-1] - 1.0  # 23 returns: rebuilt at 10 → 5, 5+5 → 10 → 5, +3
        latest = await engine.stats_records.latest("SPY")
        assert latest is not None and latest["stats"]["n"] == 8
        assert latest["from_ns"] == t0 + 16 * MIN  # the close the first kept return grows from
        want = core.compute_stats(r[-8:], None, core.AnalyticsParams(period="minute"))
        assert_stats(latest["stats"], want, STATS_FIELDS)
        assert latest["benchmark"] is None
    finally:
        await engine.stop()


@pytest.mark.parametrize(
    ("settings", "period", "periods_per_year"),
    [
        ({}, "minute", 252 * 390),
        ({"NAUTILUS_ANALYTICS_BAR_SPEC": "5m"}, "5m", 252 * 78),
        ({"NAUTILUS_ANALYTICS_BAR_SPEC": "30s"}, "30s", 252 * 780),
        ({"NAUTILUS_ANALYTICS_BAR_SPEC": "1d"}, "daily", 252),
        ({"NAUTILUS_ANALYTICS_HOURS": "all"}, "minute", 365 * 1440),
        ({"NAUTILUS_ANALYTICS_BAR_SPEC": "1h", "NAUTILUS_ANALYTICS_HOURS": "all"}, "1h", 365 * 24),
        ({"NAUTILUS_ANALYTICS_ANNUALIZATION": "100000"}, "minute", 100_000),
    ],
)
def test_periodicity_is_derived_and_stated(
    settings: dict[str, str], period: str, periods_per_year: float
) -> None:
    config = load_config(AnalyticsConfig, settings)
    got_period, got_ann, how = config.periodicity()
    assert (got_period, got_ann) == (period, periods_per_year) and how
    assert config.params().periods_per_year == periods_per_year


@pytest.mark.parametrize(
    "settings",
    [
        {"NAUTILUS_ANALYTICS_BAR_SPEC": "tick100"},  # not a time bar: no periodicity
        {"NAUTILUS_ANALYTICS_BAR_SPEC": "7m"},  # does not divide the 390-minute session
        {"NAUTILUS_ANALYTICS_HOURS": "extended"},
        {"NAUTILUS_ANALYTICS_CONVENTION": "pyfolio"},
        {"NAUTILUS_ANALYTICS_ROLLING_WINDOW": "1"},
        {"NAUTILUS_ANALYTICS_MAX_RETURNS": "2"},
        {"NAUTILUS_ANALYTICS_BENCHMARK": "BRK.B"},  # not a channel segment
    ],
)
def test_bad_settings_are_refused(settings: dict[str, str]) -> None:
    with pytest.raises((ValueError, ConfigError)):
        load_config(AnalyticsConfig, settings)
