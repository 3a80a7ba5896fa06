"""Analytics REST: ``POST /analytics/compute`` equals empyrical on the bundled daily series (Lean,
total-return adjusted), a bad body is a 400 naming the parameter; a key's drawdowns and rolling
windows, from daily bars streamed through the engine, equal empyrical's on the same returns."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import empyrical
import numpy as np
import pandas as pd
import pytest
from falcon import testing
from scipy import stats as sps

from engines.analytics.api import routes
from engines.analytics.service import AnalyticsConfig, AnalyticsEngine
from engines.marketdata.daily import read_daily_bars
from engines.shell import create_app
from protocol.records import Bar, encode
from realtime.bus import MemoryBus
from realtime.clock import SystemClock
from tests.support import until

DAY_NS = 86_400_000_000_000
REL = 1e-12


def close(ours: float | None, ref: float, rel: float = REL) -> bool:
    if ours is None:
        return not np.isfinite(ref)
    return abs(ours - ref) <= rel * max(abs(ours), abs(ref))


def daily_closes(*symbols: str, since: str = "1998-01-01") -> tuple[np.ndarray, list[np.ndarray]]:
    """Total-return-adjusted closes of ``symbols`` on their common dates."""
    bars = [read_daily_bars(s, adjustment="total") for s in symbols]
    dates = bars[0].date
    for b in bars[1:]:
        dates = np.intersect1d(dates, b.date)
    dates = dates[dates >= np.datetime64(since)]
    return dates, [b.close[np.isin(b.date, dates)] for b in bars]


def daily_bar(symbol: str, day: np.datetime64, price: float) -> dict[str, Any]:
    start = int(day.astype("datetime64[ns]").astype(np.int64))
    return encode(
        Bar(symbol=symbol, spec="1d", start_ns=start, end_ns=start + DAY_NS, open=price,
            high=price, low=price, close=price, volume=1.0, dollar_volume=price, trades=1)
    )  # fmt: skip


async def started(config: AnalyticsConfig) -> AsyncIterator[AnalyticsEngine]:
    clock = SystemClock()
    engine = AnalyticsEngine(config, bus=MemoryBus(clock=clock, max_pending=1 << 15), clock=clock)
    await engine.start()
    yield engine
    await engine.stop()


@pytest.fixture
async def engine() -> AsyncIterator[AnalyticsEngine]:
    async for running in started(AnalyticsConfig(max_post_returns=8_000)):
        yield running


async def feed_daily(
    engine: AnalyticsEngine, since: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Publish SPY and AAPL daily bars (AAPL first on odd days); their returns and the dates."""
    dates, (spy, aapl) = daily_closes("SPY", "AAPL", since=since)
    for i, day in enumerate(dates):
        order = [("AAPL", aapl[i]), ("SPY", spy[i])][:: 1 if i % 2 else -1]
        for symbol, price in order:
            await engine.bus.publish(f"bars.1d.{symbol}", daily_bar(symbol, day, float(price)))
    await until(lambda: all(k in engine.series and engine.series[k].stats.n == dates.size - 1
                            for k in ("SPY", "AAPL")))  # fmt: skip
    return dates, spy[1:] / spy[:-1] - 1.0, aapl[1:] / aapl[:-1] - 1.0


@pytest.fixture
async def daily_engine() -> AsyncIterator[AnalyticsEngine]:
    async for running in started(AnalyticsConfig(bar_spec="1d", rolling_window=63)):
        yield running


async def test_post_compute_equals_empyrical_on_daily_series(engine: AnalyticsEngine) -> None:
    dates, (aapl, spy) = daily_closes("AAPL", "SPY")
    r, b = aapl[1:] / aapl[:-1] - 1.0, spy[1:] / spy[:-1] - 1.0
    assert r.size > 5_000
    body = {"prices": aapl.tolist(), "benchmark_prices": spy.tolist(),
            "dates": [str(d) for d in dates]}  # fmt: skip
    async with testing.ASGIConductor(create_app(engine, version="t", routes=routes(engine))) as c:
        resp = await c.simulate_post("/analytics/compute", json=body)
        assert resp.status_code == 200, resp.text
        got = resp.json
        assert (got["period"], got["period_source"]) == ("daily", "inferred from dates")
        assert got["periods_per_year"] == 252 and got["convention"] == "empyrical"
        s, bench = got["stats"], got["benchmark"]
        assert s["n"] == bench["n"] == r.size
        for name, ref in (
            ("cum_return", empyrical.cum_returns_final(r)),
            ("annual_return", empyrical.annual_return(r)),
            ("annual_volatility", empyrical.annual_volatility(r)),
            ("sharpe_ratio", empyrical.sharpe_ratio(r)),
            ("sortino_ratio", empyrical.sortino_ratio(r)),
            ("downside_risk", empyrical.downside_risk(r)),
            ("calmar_ratio", empyrical.calmar_ratio(r)),
            ("omega_ratio", empyrical.omega_ratio(r)),
            ("max_drawdown", empyrical.max_drawdown(r)),
            ("tail_ratio", empyrical.tail_ratio(r)),
            ("stability", empyrical.stability_of_timeseries(r)),
            ("value_at_risk", empyrical.value_at_risk(r)),
            ("conditional_value_at_risk", empyrical.conditional_value_at_risk(r)),
            ("skew", sps.skew(r)),
            ("kurtosis", sps.kurtosis(r)),
        ):
            assert close(s[name], float(ref)), f"{name}: {s[name]} != {ref}"
        for name, ref in (
            ("alpha", empyrical.alpha(r, b)),
            ("beta", empyrical.beta(r, b)),
            ("information_ratio", empyrical.excess_sharpe(r, b)),
            ("up_capture", empyrical.up_capture(r, b)),
            ("down_capture", empyrical.down_capture(r, b)),
        ):
            assert close(bench[name], float(ref)), f"{name}: {bench[name]} != {ref}"
        worst = got["drawdowns"][0]
        assert close(worst["depth"], float(empyrical.max_drawdown(r)))
        wealth = np.cumprod(1.0 + r)
        assert worst["trough_date"] == str(
            dates[1:][np.argmin(wealth / np.maximum.accumulate(wealth))]
        )

        # returns in, quantstats' conventions: pandas' G1/G2 and the parametric VaR
        qs = await c.simulate_post(
            "/analytics/compute",
            json={"returns": r.tolist(), "convention": "quantstats", "period": "daily"},
        )
        assert qs.status_code == 200, qs.text
        q = qs.json["stats"]
        series = pd.Series(r)
        assert close(q["skew"], float(series.skew()), 1e-9)
        assert close(q["kurtosis"], float(series.kurt()), 1e-9)
        var = float(sps.norm.ppf(0.05) * series.std(ddof=1) + series.mean())
        assert close(q["value_at_risk"], var, 1e-12)
        assert qs.json["benchmark"] is None and qs.json["period_source"] == "given"
        assert close(q["sharpe_ratio"], s["sharpe_ratio"], 1e-12)  # the same series


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        ({}, "returns"),
        ({"returns": []}, "returns"),
        ({"returns": "x"}, "returns"),
        ({"returns": [0.01, None]}, "returns[1]"),
        ('{"returns": [0.01, 1e999]}', "returns[1]"),  # out of float range: inf
        ({"returns": [0.01] * 8_001}, "returns"),
        ({"returns": [0.01, 0.02], "prices": [1.0, 2.0]}, "prices"),
        ({"prices": [1.0, -2.0, 3.0]}, "prices"),
        ({"prices": [1.0, 0.0, 3.0]}, "prices"),
        ({"prices": [1.0]}, "prices"),
        ({"returns": [0.01, 0.02], "benchmark": [0.01]}, "benchmark"),
        ({"returns": [0.01, 0.02], "benchmark": [0.01, None]}, "benchmark[1]"),
        ({"prices": [1.0, 2.0, 3.0], "benchmark_prices": [1.0, 2.0]}, "benchmark_prices"),
        ({"prices": [1.0, 2.0], "benchmark_prices": [1.0, -2.0]}, "benchmark_prices"),
        (
            {"returns": [0.1], "benchmark": [0.1], "benchmark_prices": [1.0, 2.0]},
            "benchmark_prices",
        ),
        ({"returns": [0.01, 0.02], "dates": ["2020-01-02"]}, "dates"),
        ({"returns": [0.01, 0.02], "dates": ["2020-01-02", "soon"]}, "dates"),
        ({"returns": [0.01, 0.02], "dates": ["2020-01-03", "2020-01-02"]}, "dates"),
        ({"returns": [0.01, 0.02], "period": "hourly"}, "period"),
        ({"returns": [0.01, 0.02], "annualization": -1.0}, "annualization"),
        ({"returns": [0.01, 0.02], "convention": "pyfolio"}, "convention"),
        ({"returns": [0.01, 0.02], "cutoff": 1.5}, "cutoff"),
        ({"returns": [0.01, 0.02], "risk_free": "none"}, "risk_free"),
        ({"returns": [0.01, 0.02], "window": 3}, "body"),
    ],
)
async def test_post_compute_rejects_bad_input_naming_it(
    engine: AnalyticsEngine, body: dict[str, Any] | str, parameter: str
) -> None:
    async with testing.ASGIConductor(create_app(engine, version="t", routes=routes(engine))) as c:
        if isinstance(body, str):
            resp = await c.simulate_post("/analytics/compute", body=body.encode())
        else:
            resp = await c.simulate_post("/analytics/compute", json=body)
        assert resp.status_code == 400, resp.text
        assert resp.json["error"]["parameter"] == parameter, resp.json
        bad_json = await c.simulate_post("/analytics/compute", body=b"{nope")
        assert bad_json.status_code == 400 and bad_json.json["error"]["parameter"] == "body"


async def test_key_views_equal_empyrical(daily_engine: AnalyticsEngine) -> None:
    engine = daily_engine
    dates, spy_r, aapl_r = await feed_daily(engine, since="2016-01-01")
    times = (dates[1:].astype("datetime64[ns]").astype(np.int64) + DAY_NS).tolist()
    app = create_app(engine, version="t", routes=routes(engine))
    async with testing.ASGIConductor(app) as c:
        latest = (await c.simulate_get("/analytics/AAPL")).json
        assert latest["period"] == "daily" and latest["periods_per_year"] == 252
        assert close(latest["stats"]["sharpe_ratio"], float(empyrical.sharpe_ratio(aapl_r)), 1e-9)
        assert latest["benchmark"]["n"] in (aapl_r.size - 1, aapl_r.size)
        assert close(latest["benchmark"]["beta"],
                     float(empyrical.beta(aapl_r[: latest["benchmark"]["n"]],
                                          spy_r[: latest["benchmark"]["n"]])), 1e-9)  # fmt: skip

        dd = (await c.simulate_get("/analytics/AAPL/drawdowns", params={"top": 3})).json
        assert dd["n"] == aapl_r.size and len(dd["items"]) == 3
        worst = dd["items"][0]
        assert close(worst["depth"], float(empyrical.max_drawdown(aapl_r)))
        wealth = np.cumprod(1.0 + aapl_r)
        under = wealth / np.maximum.accumulate(wealth) - 1.0
        assert worst["trough_ns"] == times[int(np.argmin(under))]
        assert dd["items"][0]["depth"] <= dd["items"][1]["depth"] <= dd["items"][2]["depth"]

        roll = (await c.simulate_get("/analytics/AAPL/rolling", params={"window": 63})).json
        assert roll["times"] == times[62:]
        ref_sharpe = empyrical.roll_sharpe_ratio(aapl_r, 63)
        ref_vol = empyrical.roll_annual_volatility(aapl_r, 63)
        np.testing.assert_allclose(roll["sharpe"], ref_sharpe, rtol=1e-9)
        np.testing.assert_allclose(roll["volatility"], ref_vol, rtol=1e-9)
        m = len(engine.series["AAPL"].pair_returns)
        np.testing.assert_allclose(
            roll["beta"]["values"], empyrical.roll_beta(aapl_r[:m], spy_r[:m], 63), rtol=1e-9
        )
        default = (await c.simulate_get("/analytics/AAPL/rolling")).json
        assert default["window"] == 63 and default["sharpe"] == roll["sharpe"]

        for path, params, parameter in (
            ("/analytics/AAPL/rolling", {"window": 1}, "window"),
            ("/analytics/AAPL/rolling", {"window": "x"}, "window"),
            ("/analytics/AAPL/drawdowns", {"top": 0}, "top"),
            ("/analytics/AAPL/report", {"window": 0}, "window"),
        ):
            bad = await c.simulate_get(path, params=params)
            assert bad.status_code == 400 and bad.json["error"]["parameter"] == parameter
        for path in ("drawdowns", "rolling", "report", "history"):
            missing = await c.simulate_get(f"/analytics/QQQ/{path}")
            assert missing.status_code in (404, 200), path
            if path != "history":
                assert missing.status_code == 404 and missing.json["error"]["parameter"] == "key"
        page = await c.simulate_get("/analytics/SPY/report")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "252 periods per year" in page.text and "<svg" in page.text
