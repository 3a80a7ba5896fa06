"""``POST /portfolio/optimize``: weights from the bundled daily history equal PyPortfolioOpt's on
the same returns (and the core called directly); a bad field is a 400 naming it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from falcon import testing
from pypfopt import EfficientFrontier, expected_returns, risk_models

from engines.marketdata.daily import read_daily_bars
from engines.portfolio.api import routes
from engines.portfolio.service import PortfolioConfig, PortfolioEngine
from engines.shell import create_app
from realtime.bus import MemoryBus
from realtime.clock import ManualClock

SYMBOLS = ["SPY", "QQQ", "IWM", "EEM"]


@pytest.fixture
async def client() -> AsyncIterator[testing.ASGIConductor]:
    clock = ManualClock(0)
    engine = PortfolioEngine(PortfolioConfig(), bus=MemoryBus(clock=clock), clock=clock)
    await engine.start()
    async with testing.ASGIConductor(create_app(engine, version="t", routes=routes(engine))) as c:
        yield c
    await engine.stop()


def closes(start: str, end: str) -> Any:
    import pandas as pd

    frames = {}
    for symbol in SYMBOLS:
        bars = read_daily_bars(symbol)
        keep = (bars.date >= np.datetime64(start)) & (bars.date <= np.datetime64(end))
        frames[symbol] = pd.Series(bars.close[keep], index=bars.date[keep])
    return pd.DataFrame(frames).dropna()


async def test_min_variance_and_max_sharpe_equal_pypfopt(client: testing.ASGIConductor) -> None:
    prices = closes("2010-01-04", "2019-12-31")
    mu = expected_returns.mean_historical_return(prices)
    cov = risk_models.sample_cov(prices)
    for method, solve in (
        ("min_variance", lambda ef: ef.min_volatility()),
        ("max_sharpe", lambda ef: ef.max_sharpe(risk_free_rate=0.0)),
    ):
        body = {"method": method, "symbols": SYMBOLS, "start": "2010-01-04", "end": "2019-12-31"}
        answer = await client.simulate_post("/portfolio/optimize", json=body)
        assert answer.status_code == 200, answer.json
        ef = EfficientFrontier(mu, cov)
        solve(ef)
        want = ef.clean_weights(cutoff=0, rounding=None)
        got = answer.json["weights"]
        assert got == pytest.approx(dict(want), abs=1e-4), method
        assert answer.json["kkt"]["worst"] < 1e-8 and answer.json["converged"]
        assert answer.json["observations"] == len(prices) - 1


@pytest.mark.parametrize(
    ("change", "parameter"),
    [
        ({"symbols": ["SPY", "NOPE"]}, "symbols[1]"),
        ({"symbols": ["SPY"]}, "symbols"),
        ({"start": "last year"}, "start"),
        ({"method": "best"}, "method"),
        ({"target_return": 5.0, "method": "efficient_return"}, "target_return"),
        ({"surprise": 1}, "body"),
    ],
)
async def test_bad_fields_are_named(
    client: testing.ASGIConductor, change: dict[str, Any], parameter: str
) -> None:
    body = {"method": "min_variance", "symbols": SYMBOLS, "start": "2015-01-02", **change}
    answer = await client.simulate_post("/portfolio/optimize", json=body)
    assert answer.status_code == 400, answer.json
    assert answer.json["error"]["parameter"] == parameter
