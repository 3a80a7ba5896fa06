"""Factor REST on real PostgreSQL: ``POST /factor/exposures`` against statsmodels (rolling
params/t-stats, full-sample HAC); every bad input a 400 naming its field; latest/history of the
published exposures; ``GET /factor/ic`` summary and stored per-date ICs."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest
import statsmodels.api as sm
from falcon import testing
from statsmodels.regression.rolling import RollingOLS

from engines.factor import core
from engines.factor.api import routes
from engines.factor.service import FactorConfig, FactorEngine
from engines.shell import create_app
from realtime.bus import Envelope, MemoryBus
from realtime.clock import ManualClock
from tests.engines.factor.conftest import Universe, paired_returns
from tests.engines.factor.test_core import assert_close
from tests.engines.factor.test_service import TICKERS, day_ns, recording
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


# ── alphalens tables and the traded factor model over REST ─────────────────────────────────


async def replay(engine: FactorEngine, messages: list[Envelope]) -> None:
    """Publish ``messages`` as live: a date's signals are in before the next date's bars."""
    for m in messages:
        if m.channel.startswith("bars.") and engine.backlog():
            await until(lambda: engine.backlog() == 0)
        await engine.bus.publish(m.channel, m.payload, event_ns=m.event_ns)
    await until(lambda: engine.backlog() == 0)


async def test_tables_over_rest_equal_the_pure_function_and_alphalens(
    client: testing.ASGIConductor, universe: Universe
) -> None:
    """The 12-1 momentum of the eight replayed names over their last 400 days: ``GET
    /factor/tables`` equals ``core.factor_tables`` on the same closes and signal (itself equal to
    alphalens-reloaded, test_core), and alphalens' own mean return by quantile and IC mean."""
    import alphalens as al
    import pandas as pd

    engine: FactorEngine = client.engine  # type: ignore[attr-defined]
    chars = core.characteristics(universe.close, universe.volume, universe.column("SPY"))
    rows = slice(-400, None)
    await replay(engine, recording(universe, rows, chars["momentum"]))
    horizons, q = (1, 5, 20), 4
    resp = await client.simulate_get(
        "/factor/tables", params={"signal": "features_mom", "horizons": "20,1,5", "quantiles": "4"}
    )
    assert resp.status_code == 200, resp.text
    got = resp.json

    names = sorted(TICKERS)
    cols = [universe.tickers.index(t) for t in names]
    close = universe.close[rows][:, cols]
    signal = chars["momentum"][rows][:, cols]
    assert np.isfinite(close).all() and np.isfinite(signal).all()
    ours = core.factor_tables(signal, close, horizons=horizons, quantiles=q)
    assert got["symbols"] == names and got["dates"] == 400 and got["quantiles"] == q
    assert got["rows"] == int(ours["rows"].sum()) == 8 * (400 - 20)
    assert got["rank_autocorrelation"] == np.nanmean(ours["rank_autocorrelation"])
    np.testing.assert_array_equal(got["turnover"], np.nanmean(ours["turnover"], axis=0))
    for h in horizons:
        table = ours["horizons"][h]["quantiles"]
        answer = got["horizons"][str(h)]
        assert answer["ic"] == ours["horizons"][h]["ic_summary"].to_payload()
        np.testing.assert_array_equal(answer["quantiles"]["mean"], table.mean)
        np.testing.assert_array_equal(answer["quantiles"]["std_error"], table.std_error)
        np.testing.assert_array_equal(answer["quantiles"]["mean_demeaned"], table.mean_demeaned)
        np.testing.assert_array_equal(
            answer["quantiles"]["std_error_demeaned"], table.std_error_demeaned
        )
        assert answer["quantiles"]["spread_mean"] == table.spread_mean
        assert answer["quantiles"]["spread_std_error"] == table.spread_std_error

    dates = pd.DatetimeIndex(universe.dates[rows].astype("datetime64[ns]"))
    prices = pd.DataFrame(close, index=dates, columns=names)
    factor = pd.DataFrame(signal, index=dates, columns=names).stack()
    factor.index.names = ["date", "asset"]
    clean = al.utils.get_clean_factor_and_forward_returns(
        factor, prices, quantiles=q, periods=horizons, max_loss=1.0
    )
    assert len(clean) == got["rows"]
    mean_ret, _ = al.performance.mean_return_by_quantile(clean, demeaned=False)
    ic = al.performance.factor_information_coefficient(clean)
    for h in horizons:
        answer = got["horizons"][str(h)]
        np.testing.assert_allclose(answer["quantiles"]["mean"], mean_ret[f"{h}D"], rtol=1e-12)
        assert answer["ic"]["mean"] == pytest.approx(ic[f"{h}D"].mean(), rel=1e-12)

    window = {"signal": "features_mom", "from": str(day_ns(universe.dates[-100]))}
    recent = (await client.simulate_get("/factor/tables", params=window)).json
    assert recent["dates"] == 100 and recent["first_ns"] == day_ns(universe.dates[-100])
    empty = {"signal": "features_mom", "to": "1"}
    resp = await client.simulate_get("/factor/tables", params=empty)
    assert resp.status_code == 200 and resp.json["rows"] == 0
    assert resp.json["horizons"]["5"]["quantiles"]["mean"] == [None] * 5


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"signal": "vpin_vpin"}, "signal"),
        ({}, "signal"),
        ({"signal": "features_mom", "horizons": "1,x"}, "horizons"),
        ({"signal": "features_mom", "horizons": "0,5"}, "horizons"),
        ({"signal": "features_mom", "horizons": "5,100000"}, "horizons"),
        ({"signal": "features_mom", "quantiles": "1"}, "quantiles"),
        ({"signal": "features_mom", "quantiles": "99"}, "quantiles"),
        ({"signal": "features_mom", "from": "yesterday"}, "from"),
        ({"signal": "features_mom", "from": "100", "to": "100"}, "to"),
    ],
)
async def test_bad_table_queries_answer_400_naming_the_parameter(
    client: testing.ASGIConductor, params: dict[str, str], parameter: str
) -> None:
    resp = await client.simulate_get("/factor/tables", params=params)
    assert resp.status_code == 400, resp.text
    assert resp.json["error"]["parameter"] == parameter


def traded_panel(universe: Universe) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    names, factors = ["AAPL", "BAC", "WM", "GOOG"], ["SPY", "IWM", "EEM"]
    cols = np.column_stack([universe.column(t) for t in (*names, *factors)])
    cols = cols[np.isfinite(cols).all(axis=1)]
    rets = (cols[1:] / cols[:-1] - 1.0)[-2_000:]
    return names, factors, rets[:, : len(names)], rets[:, len(names) :]


@pytest.mark.parametrize(
    "kw",
    [{"cov_type": "robust"}, {"cov_type": "kernel", "debiased": False}, {"bandwidth": 6.0}],
    ids=["robust", "kernel-auto", "kernel-6"],
)
async def test_traded_factor_model_over_rest_equals_the_pure_fit_and_linearmodels(
    client: testing.ASGIConductor, universe: Universe, kw: dict[str, Any]
) -> None:
    from linearmodels.asset_pricing import TradedFactorModel

    from engines.factor.traded_factor import traded_factor_model

    names, factors, p, f = traded_panel(universe)
    kw = {"cov_type": "kernel", **kw} if "bandwidth" in kw else kw
    body = {
        "portfolios": {n: p[:, i].tolist() for i, n in enumerate(names)},
        "factors": {n: f[:, j].tolist() for j, n in enumerate(factors)},
        **kw,
    }
    resp = await client.simulate_post("/factor/traded", json=body)
    assert resp.status_code == 200, resp.text
    got = resp.json
    ours = traded_factor_model(p, f, **kw)
    assert got["factors"] == factors and got["nobs"] == ours.nobs == len(p) > 1_500
    assert got["bandwidth"] == ours.bandwidth
    for i, name in enumerate(names):
        for part, values in (
            ("estimate", ours.params[i]),
            ("std_error", ours.std_errors[i]),
            ("t", ours.tstats[i]),
        ):
            answer = got["portfolios"][name][part]
            row = [answer["alpha"], *(answer["betas"][n] for n in factors)]
            np.testing.assert_array_equal(row, values)
    premia = [got["risk_premia"][n] for n in factors]
    np.testing.assert_array_equal([r["estimate"] for r in premia], ours.risk_premia)
    np.testing.assert_array_equal([r["std_error"] for r in premia], ours.risk_premia_se)
    np.testing.assert_array_equal([r["t"] for r in premia], ours.risk_premia_tstats)
    assert (got["j_stat"], got["j_pvalue"]) == (ours.j_stat, ours.j_pvalue)
    assert got["rsquared"] == ours.rsquared

    ref = TradedFactorModel(p, f).fit(**kw)
    alphas = [got["portfolios"][n]["estimate"]["alpha"] for n in names]
    np.testing.assert_allclose(alphas, ref.params.to_numpy()[:, 0], rtol=1e-8)
    t_spy = [got["portfolios"][n]["t"]["betas"]["SPY"] for n in names]
    np.testing.assert_allclose(t_spy, ref.tstats.to_numpy()[:, 1], rtol=1e-8)
    assert got["j_stat"] == pytest.approx(ref.j_statistic.stat, rel=1e-8)
    assert got["risk_premia"]["IWM"]["t"] == pytest.approx(
        ref.risk_premia_tstats.to_numpy()[1], rel=1e-8
    )


@pytest.mark.parametrize(
    ("change", "parameter"),
    [
        ({"portfolios": {"A": [0.1, None, 0.2, 0.3, 0.0]}}, "portfolios.A[1]"),
        ({"portfolios": {"A": [0.1, "x", 0.2, 0.3, 0.0]}}, "portfolios.A[1]"),
        ({"factors": {"SPY": [0.01, 0.02, 0.03, 0.04, float("inf")]}}, "factors.SPY[4]"),
        ({"factors": {"SPY": [0.1, 0.2, 0.3]}}, "factors.SPY"),
        ({"portfolios": {"A": [0.0] * 5, "B": [0.0] * 4}}, "portfolios.B"),
        ({"portfolios": {"A": [0.1, 0.2]}, "factors": {"SPY": [0.3, 0.1]}}, "portfolios.A"),
        (  # too short for the automatic bandwidth
            {
                "portfolios": {"A": [0.1, 0.2, 0.4]},
                "factors": {"SPY": [0.3, 0.1, 0.0]},
                "cov_type": "kernel",
            },
            "portfolios.A",
        ),
        ({"bandwidth": 2.0}, "bandwidth"),  # robust takes no bandwidth
        ({"cov_type": "kernel", "bandwidth": -1.0}, "bandwidth"),
        ({"cov_type": "clustered"}, "cov_type"),
        ({"portfolios": {}}, "portfolios"),
        ({"portfolios": {k: [0.0] * 5 for k in "ABCDE"}}, "portfolios"),
        ({"portfolios": {"A": [0.0] * 2_001}}, "portfolios.A"),
        ({"extra": 1}, "body"),
    ],
)
async def test_bad_traded_bodies_answer_400_naming_the_field(
    client: testing.ASGIConductor, change: dict[str, object], parameter: str
) -> None:
    body: dict[str, object] = {
        "portfolios": {"A": [0.01, -0.02, 0.03, 0.0, 0.01]},
        "factors": {"SPY": [0.01, -0.01, 0.02, 0.001, 0.004]},
    }
    body.update(change)
    content = json.dumps(body).replace("Infinity", "1e999")  # out of range, as JSON has it
    resp = await client.simulate_post(
        "/factor/traded", body=content, headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400, resp.text
    assert resp.json["error"]["parameter"] == parameter


async def test_the_openapi_document_lists_tables_and_traded(client: testing.ASGIConductor) -> None:
    paths = (await client.simulate_get("/openapi.json")).json["paths"]
    tables = paths["/factor/tables"]["get"]
    assert {p["name"] for p in tables["parameters"]} == {
        "signal", "horizons", "quantiles", "from", "to"
    }  # fmt: skip
    quantiles = next(p for p in tables["parameters"] if p["name"] == "quantiles")
    assert quantiles["schema"] == {"type": "integer", "default": 5, "minimum": 2}
    traded = paths["/factor/traded"]["post"]
    assert "requestBody" in traded and "400" in traded["responses"]
