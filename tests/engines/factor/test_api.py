"""Factor REST on real PostgreSQL: ``POST /factor/exposures`` against statsmodels (rolling
params/t-stats, full-sample HAC); every bad input a 400 naming its field; latest/history of the
published exposures; ``GET /factor/ic`` summary and stored per-date ICs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest
import statsmodels.api as sm
from falcon import testing
from statsmodels.regression.rolling import RollingOLS

from engines.factor import core
from engines.factor.api import routes
from engines.factor.service import FactorConfig, FactorEngine
from engines.shell import create_app
from realtime.bus import MemoryBus
from realtime.clock import ManualClock
from tests.engines.factor.conftest import Universe, paired_returns
from tests.engines.factor.test_core import assert_close
from tests.engines.factor.test_service import TICKERS, recording
from tests.support import TEST_DSN, migrated_schema, until


@pytest.fixture(scope="module")
def schema() -> Iterator[str]:
    with migrated_schema("nautilus_factor_api") as name:
        yield name


@pytest.fixture
async def client(schema: str) -> AsyncIterator[testing.ASGIConductor]:
    clock = ManualClock(0)
    config = FactorConfig(
        bar_spec="1d",
        ic_signal="features:values.mom",
        ic_horizons=(1, 5),
        warmup_bars=512,
        warmup_symbols=8,
        max_batch_bars=2_000,
        max_batch_symbols=4,
        db_dsn=TEST_DSN,
        db_schema=schema,
    )
    engine = FactorEngine(config, bus=MemoryBus(clock=clock), clock=clock)
    await engine.start()
    async with testing.ASGIConductor(create_app(engine, version="t", routes=routes(engine))) as c:
        c.engine = engine  # type: ignore[attr-defined]
        yield c
    await engine.stop()


def nulls(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values])


async def test_posted_exposures_equal_statsmodels(
    client: testing.ASGIConductor, universe: Universe
) -> None:
    y1, x = paired_returns(universe, "AAPL", ["SPY", "QQQ"])
    y2, _ = paired_returns(universe, "BAC", ["SPY", "QQQ"])
    assert len(y2) == len(y1)
    n = 1_500
    body = {
        "returns": {"AAPL": y1[-n:].tolist(), "BAC": y2[-n:].tolist()},
        "factors": {"SPY": x[-n:, 0].tolist(), "QQQ": x[-n:, 1].tolist()},
        "window": 120,
        "hac_lags": 5,
    }
    resp = await client.simulate_post("/factor/exposures", json=body)
    assert resp.status_code == 200, resp.text
    got = resp.json
    assert got["factors"] == ["SPY", "QQQ"] and got["min_obs"] == 120
    design = sm.add_constant(x[-n:])
    for symbol, y in (("AAPL", y1[-n:]), ("BAC", y2[-n:])):
        ref = RollingOLS(y, design, window=120).fit()
        answer = got["symbols"][symbol]
        params = np.column_stack(
            [nulls(answer["alpha"]), nulls(answer["betas"]["SPY"]), nulls(answer["betas"]["QQQ"])]
        )
        assert_close(params, ref.params, label=symbol)
        assert_close(nulls(answer["t_betas"]["QQQ"]), ref.tvalues[:, 2], label=f"{symbol} t")
        assert_close(nulls(answer["r2"]), ref.rsquared, label=f"{symbol} r2")
        hac = sm.OLS(y, design).fit(cov_type="HAC", cov_kwds={"maxlags": 5})
        full = answer["full_sample"]
        assert full["hac_t_betas"]["SPY"] == pytest.approx(hac.tvalues[1], rel=1e-9)
        assert full["betas"]["QQQ"] == pytest.approx(hac.params[2], rel=1e-9)


@pytest.mark.parametrize(
    ("change", "parameter"),
    [
        ({"returns": {"AAPL": [0.1, None, 0.2, 0.3]}}, "returns.AAPL[1]"),  # NaN as JSON has it
        ({"factors": {"SPY": [0.1, 0.2, 0.3]}}, "factors.SPY"),
        ({"returns": {"AAPL": [0.1, 0.2, 0.3, 0.4], "BAC": [0.1]}}, "returns.BAC"),
        ({"window": 2}, "window"),
        ({"decay": 1.5}, "decay"),
        ({"min_obs": 2}, "min_obs"),
        ({"window": 0, "min_obs": 10}, "returns.AAPL"),  # too short for 10 rows
        ({"hac_lags": 4}, "hac_lags"),
        ({"returns": {}}, "returns"),
        (
            {
                "returns": {
                    "A": [0.0] * 4,
                    "B": [0.0] * 4,
                    "C": [0.0] * 4,
                    "D": [0.0] * 4,
                    "E": [0.0] * 4,
                }
            },
            "returns",
        ),
        ({"returns": {"AAPL": [0.0] * 2_001}}, "returns.AAPL"),
        ({"returns": {"AAPL": ["x", 0.0, 0.0, 0.0]}}, "returns.AAPL[0]"),
        ({"returns": {"AAPL": 3}}, "returns.AAPL"),
        ({"extra": 1}, "body"),  # msgspec names it in the message: unknown field `extra`
    ],
)
async def test_bad_bodies_answer_400_naming_the_field(
    client: testing.ASGIConductor, change: dict[str, object], parameter: str
) -> None:
    body: dict[str, object] = {
        "returns": {"AAPL": [0.01, -0.02, 0.03, 0.0]},
        "factors": {"SPY": [0.01, -0.01, 0.02, 0.001]},
        "window": 0,
        "min_obs": 3,
    }
    body.update(change)
    resp = await client.simulate_post("/factor/exposures", json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json["error"]["parameter"] == parameter


async def test_latest_history_and_ic_of_the_stream(
    client: testing.ASGIConductor, universe: Universe
) -> None:
    engine: FactorEngine = client.engine  # type: ignore[attr-defined]
    chars = core.characteristics(universe.close, universe.volume, universe.column("SPY"))
    messages = recording(universe, slice(-150, None), chars["momentum"])
    for m in messages:  # a date's signals are in before the next date's bars, as live
        if m.channel.startswith("bars.") and engine.backlog():
            await until(lambda: engine.backlog() == 0)
        await engine.bus.publish(m.channel, m.payload, event_ns=m.event_ns)
    await until(lambda: engine.backlog() == 0 and engine.running_ic[5].n >= 100)
    published = engine.published_total._value.get() + engine.ic_total._value.get()
    await until(lambda: engine.storage.store.stats().rows_written >= published)

    resp = await client.simulate_get("/factor/market/AAPL/latest")
    assert resp.status_code == 200, resp.text
    latest = resp.json
    assert latest["symbol"] == "AAPL" and latest["n"] == 60 and set(latest["betas"]) == {"SPY"}
    resp = await client.simulate_get("/factor/other/AAPL/latest")
    assert resp.status_code == 400 and resp.json["error"]["parameter"] == "model"
    assert (await client.simulate_get("/factor/market/NOPE/latest")).status_code == 404
    page = (await client.simulate_get("/factor/market/AAPL/history", params={"limit": "500"})).json
    assert len(page["items"]) == 149 and page["items"][-1] == latest

    resp = await client.simulate_get(
        "/factor/ic", params={"signal": "features_mom", "horizon": "5"}
    )
    assert resp.status_code == 200, resp.text
    ic = resp.json
    summary = engine.running_ic[5].summary()
    assert ic["summary"]["n"] == summary.n >= 100
    assert ic["summary"]["mean"] == pytest.approx(summary.mean)
    assert all(-1.0 <= item["ic"] <= 1.0 for item in ic["items"])
    for params, parameter in (
        ({"signal": "vpin_vpin", "horizon": "5"}, "signal"),
        ({"horizon": "5"}, "signal"),
        ({"signal": "features_mom", "horizon": "20"}, "horizon"),
        ({"signal": "features_mom", "horizon": "x"}, "horizon"),
    ):
        resp = await client.simulate_get("/factor/ic", params=params)
        assert resp.status_code == 400 and resp.json["error"]["parameter"] == parameter, params
    assert len(TICKERS) == 8
