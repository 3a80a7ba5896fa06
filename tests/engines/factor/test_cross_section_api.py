"""``POST /factor/cross-section`` against linearmodels ``FamaMacBeth`` (OLS, WLS, Newey–West
kernel) to ≤ 1e-8, on a posted panel and on the bundled-universe form; the long–short quantile
spread against ``pandas.qcut``; every bad input a 400 naming its field; the OpenAPI entry."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
from falcon import testing

from engines.factor import core, cross_section
from engines.factor.api import routes
from engines.factor.service import FactorConfig, FactorEngine
from engines.shell import create_app
from realtime.bus import MemoryBus
from realtime.clock import ManualClock
from tests.engines.factor.conftest import Universe
from tests.engines.factor.test_core import linearmodels_fm
from tests.support import TEST_DSN, migrated_schema

NAMES = ("size", "momentum", "reversal", "volatility", "beta")
ROWS = 80  # month ends posted: 80 dates × 13 symbols


@pytest.fixture(scope="module")
def schema() -> Iterator[str]:
    with migrated_schema("nautilus_factor_cross_section") as name:
        yield name


@pytest.fixture
async def client(schema: str) -> AsyncIterator[testing.ASGIConductor]:
    clock = ManualClock(0)
    config = FactorConfig(
        bar_spec="1d", warmup_bars=0, warmup_symbols=0, max_batch_bars=500,
        max_batch_symbols=16, db_dsn=TEST_DSN, db_schema=schema,
    )  # fmt: skip
    engine = FactorEngine(config, bus=MemoryBus(clock=clock), clock=clock)
    await engine.start()
    async with testing.ASGIConductor(create_app(engine, version="t", routes=routes(engine))) as c:
        yield c
    await engine.stop()


def listed(a: np.ndarray) -> list[Any]:
    """A matrix as JSON lists, NaN → null."""
    return [[v if np.isfinite(v) else None for v in row] for row in a.tolist()]


def nulls(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def spy_panel(universe: Universe, rows: np.ndarray, horizon: int = 21) -> dict[str, Any]:
    """The reference panel on SPY's sessions: ``core.characteristics`` (tested against pandas
    rolling windows) at ``rows``, the ``horizon``-session forward return by pandas' shift."""
    on = np.isfinite(universe.column("SPY"))
    close, volume = universe.close[on], universe.volume[on]
    chars = core.characteristics(close, volume, universe.column("SPY")[on])
    frame = pd.DataFrame(close)
    fwd = (frame.shift(-horizon) / frame - 1.0).to_numpy()
    return {
        "y": fwd[rows],
        "x": np.stack([chars[k][rows] for k in NAMES], axis=-1),
        "w": (close * volume)[rows],
        "rows": rows,
        "dates": [str(d) for d in universe.dates[on][rows]],
    }


@pytest.fixture(scope="module")
def posted(universe: Universe) -> dict[str, Any]:
    n = int(np.isfinite(universe.column("SPY")).sum())
    return spy_panel(universe, np.arange(n - 21 - 21 * ROWS, n - 21, 21))


def body_of(panel: dict[str, Any], universe: Universe, **extra: Any) -> dict[str, Any]:
    return {
        "dates": panel["dates"],
        "symbols": universe.tickers,
        "returns": listed(panel["y"]),
        "characteristics": {k: listed(panel["x"][:, :, i]) for i, k in enumerate(NAMES)},
        **extra,
    }


def assert_equals_linearmodels(got: dict[str, Any], panel: dict[str, Any], **fit: Any) -> None:
    weights = got["estimator"] == "wls"
    ref = linearmodels_fm(panel, weights=weights, **fit)
    fm = got["fama_macbeth"]
    columns = ["intercept", *NAMES]
    assert fm["periods"] == int(np.isfinite(ref.all_params).all(axis=1).sum()) >= 2
    for key, want in (("params", ref.params), ("std_error", ref.std_errors), ("t", ref.tstats)):
        np.testing.assert_allclose([fm[key][c] for c in columns], want.values, rtol=1e-8, atol=0)
    slopes = np.column_stack([nulls(got["slopes"][c]) for c in columns])
    per_date = ref.all_params.reindex(range(len(panel["rows"]))).values
    np.testing.assert_allclose(slopes, per_date, rtol=1e-8, atol=1e-12)
    complete = np.isfinite(panel["y"]) & np.isfinite(panel["x"]).all(axis=-1)
    if weights:
        complete &= np.isfinite(panel["w"]) & (panel["w"] > 0)
    assert got["nobs"] == complete.sum(axis=1).tolist()


@pytest.mark.parametrize(
    ("extra", "fit"),
    [
        ({}, {"cov_type": "unadjusted"}),
        ({"nw_lags": 3}, {"cov_type": "kernel", "bandwidth": 3}),
        ({"weights": "w"}, {"cov_type": "unadjusted"}),
    ],
    ids=["ols", "newey-west", "wls"],
)
async def test_posted_panel_equals_linearmodels_fama_macbeth(
    client: testing.ASGIConductor,
    universe: Universe,
    posted: dict[str, Any],
    extra: dict[str, Any],
    fit: dict[str, Any],
) -> None:
    if "weights" in extra:
        extra = {"weights": listed(posted["w"])}
    resp = await client.simulate_post(
        "/factor/cross-section", json=body_of(posted, universe, **extra)
    )
    assert resp.status_code == 200, resp.text
    got = resp.json
    assert got["dates"] == posted["dates"] and got["symbols"] == universe.tickers
    assert got["std_errors"] == ("newey_west" if "nw_lags" in extra else "plain")
    assert_equals_linearmodels(got, posted, **fit)
    # per-date R² of one date against a direct least-squares fit
    d = int(np.flatnonzero(np.isfinite(nulls(got["r2"])))[-1])
    ok = np.isfinite(posted["y"][d]) & np.isfinite(posted["x"][d]).all(axis=1)
    w = posted["w"][d, ok] if "weights" in extra else np.ones(int(ok.sum()))
    design = np.column_stack([np.ones(int(ok.sum())), posted["x"][d, ok]])
    beta = np.linalg.lstsq(design * np.sqrt(w)[:, None], posted["y"][d, ok] * np.sqrt(w))[0]
    resid = posted["y"][d, ok] - design @ beta
    ybar = np.average(posted["y"][d, ok], weights=w)
    r2 = 1 - np.sum(w * resid**2) / np.sum(w * (posted["y"][d, ok] - ybar) ** 2)
    assert got["r2"][d] == pytest.approx(r2, rel=1e-9)


async def test_long_short_spread_is_top_minus_bottom_of_qcut(
    client: testing.ASGIConductor, universe: Universe, posted: dict[str, Any]
) -> None:
    resp = await client.simulate_post(
        "/factor/cross-section", json=body_of(posted, universe, quantiles=3)
    )
    assert resp.status_code == 200, resp.text
    got = resp.json["long_short"]
    assert set(got) == set(NAMES)
    for i, name in enumerate(NAMES):
        want = np.full(len(posted["dates"]), np.nan)
        for d in range(len(posted["dates"])):
            ok = np.isfinite(posted["x"][d, :, i]) & np.isfinite(posted["y"][d])
            if ok.sum() < 3:
                continue
            labels = pd.qcut(posted["x"][d, ok, i], 3, labels=False)
            means = pd.Series(posted["y"][d, ok]).groupby(labels).mean()
            want[d] = means.loc[2] - means.loc[0]
        spread = nulls(got[name]["returns"])
        np.testing.assert_array_equal(np.isnan(spread), np.isnan(want), err_msg=name)
        on = np.isfinite(want)
        np.testing.assert_allclose(spread[on], want[on], rtol=1e-12, err_msg=name)
        v = want[on]
        assert got[name]["periods"] == v.size
        assert got[name]["mean"] == pytest.approx(v.mean(), rel=1e-12)
        se = v.std(ddof=1) / np.sqrt(v.size)
        assert got[name]["std_error"] == pytest.approx(se, rel=1e-12)
        assert got[name]["t"] == pytest.approx(v.mean() / se, rel=1e-12)


@pytest.mark.parametrize("weighted", [False, True], ids=["ols", "wls"])
async def test_universe_form_equals_linearmodels_on_the_bundled_history(
    client: testing.ASGIConductor, universe: Universe, weighted: bool
) -> None:
    body: dict[str, Any] = {"universe": [t.lower() for t in universe.tickers],
                            "from": "2016-01-01", "to": "2018-12-31", "nw_lags": 2}  # fmt: skip
    if weighted:
        body["weights"] = "dollar_volume"
    resp = await client.simulate_post("/factor/cross-section", json=body)
    assert resp.status_code == 200, resp.text
    got = resp.json
    sessions = universe.dates[np.isfinite(universe.column("SPY"))]
    first = int(np.searchsorted(sessions, np.datetime64("2016-01-01")))
    last = int(np.searchsorted(sessions, np.datetime64("2018-12-31"), side="right")) - 1
    rows = np.arange(first, last - 21 + 1, 21)
    panel = spy_panel(universe, rows)
    assert got["dates"] == panel["dates"] and len(rows) == 35
    assert got["symbols"] == universe.tickers and got["horizon"] == 21
    assert got["characteristics"] == list(NAMES)
    assert got["estimator"] == ("wls" if weighted else "ols")
    assert_equals_linearmodels(got, panel, cov_type="kernel", bandwidth=2)


async def test_universe_form_with_chosen_characteristics(
    client: testing.ASGIConductor, universe: Universe
) -> None:
    body = {"universe": ["AAPL", "AIG", "BAC", "SPY", "QQQ"], "from": "2019-01-01",
            "to": "2019-12-31", "characteristics": ["reversal", "beta"], "horizon": 5,
            "quantiles": 2}  # fmt: skip
    resp = await client.simulate_post("/factor/cross-section", json=body)
    assert resp.status_code == 200, resp.text
    got = resp.json
    assert got["characteristics"] == ["reversal", "beta"]
    assert set(got["slopes"]) == {"intercept", "reversal", "beta"}
    assert got["fama_macbeth"]["periods"] == len(got["dates"]) == 50
    assert all(n == 5 for n in got["nobs"])


def bad(**change: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "dates": ["d0", "d1", "d2"],
        "symbols": ["A", "B", "C", "D"],
        "returns": [[0.01, 0.02, -0.01, 0.0]] * 3,
        "characteristics": {"size": [[1.0, 2.0, 3.0, 4.0]] * 3},
        "quantiles": 2,
    }
    base.update(change)
    return {k: v for k, v in base.items() if v is not None}


UNIVERSE = {"universe": ["AAPL", "BAC", "SPY", "QQQ"], "from": "2019-01-01", "to": "2019-06-30",
            "quantiles": 2}  # fmt: skip


@pytest.mark.parametrize(
    ("body", "parameter"),
    [
        (bad(returns=[[0.0] * 4] * 2), "returns"),  # a row missing
        (bad(returns=[[0.0] * 4, [0.0] * 3, [0.0] * 4]), "returns[1]"),
        (bad(characteristics={"size": [[1.0] * 4] * 2}), "characteristics.size"),
        (
            bad(characteristics={"size": [[1.0] * 4, [1.0] * 5, [1.0] * 4]}),
            "characteristics.size[1]",
        ),
        (bad(characteristics={"size": [[1.0, "x", 1.0, 1.0]] * 3}), "characteristics.size[0][1]"),
        (bad(characteristics={"size": 3}), "characteristics.size"),
        (bad(characteristics={}), "characteristics"),
        (bad(characteristics={"intercept": [[1.0] * 4] * 3}), "characteristics.intercept"),
        (bad(weights=[[1.0, -1.0, 1.0, 1.0]] * 3), "weights[0][1]"),
        (bad(weights="dollar_volume"), "weights"),
        (bad(symbols=["A", "B", "A", "D"]), "symbols[2]"),
        (bad(dates=["d0", "d0", "d2"]), "dates[1]"),
        (bad(dates=["d0"], returns=[[0.0] * 4], characteristics={"s": [[1.0] * 4]}), "dates"),
        (
            bad(
                symbols=["A", "B"], returns=[[0.0] * 2] * 3, characteristics={"s": [[1.0] * 2] * 3}
            ),
            "symbols",
        ),
        (bad(symbols=[f"S{i}" for i in range(17)]), "symbols"),  # max_batch_symbols 16
        (bad(dates=[f"d{i}" for i in range(501)]), "dates"),  # max_batch_bars 500
        (bad(quantiles=1), "quantiles"),
        (bad(quantiles=5), "quantiles"),  # more than the 4 symbols
        (bad(nw_lags=3), "nw_lags"),
        (bad(nw_lags=-1), "nw_lags"),
        (bad(returns=None), "returns"),
        (bad(horizon=5), "horizon"),
        (bad(extra=1), "body"),  # the shell names the body for an unknown field
        ({**UNIVERSE, "from": "2019-06-30", "to": "2019-01-01"}, "to"),  # reversed
        ({**UNIVERSE, "to": "2019-01-20"}, "to"),  # fewer than 2 rebalance dates
        ({**UNIVERSE, "from": "2019-13-01"}, "from"),
        ({**UNIVERSE, "universe": ["AAPL", "NOPE", "SPY", "QQQ"]}, "universe[1]"),
        ({**UNIVERSE, "universe": ["AAPL", "BAC", "aapl", "QQQ"]}, "universe[2]"),
        ({**UNIVERSE, "characteristics": ["size", "value"]}, "characteristics[1]"),
        ({**UNIVERSE, "characteristics": {"size": [[1.0]]}}, "characteristics"),
        ({**UNIVERSE, "weights": [[1.0]]}, "weights"),
        ({**UNIVERSE, "symbols": ["A"]}, "symbols"),
        ({**UNIVERSE, "horizon": 0}, "horizon"),
        ({**UNIVERSE, "to": None}, "to"),
        ({**UNIVERSE, "universe": ["AAPL", "BAC", "SPY"]}, "universe"),  # 3 < 5 + 2
    ],
)
async def test_bad_bodies_answer_400_naming_the_field(
    client: testing.ASGIConductor, body: dict[str, Any], parameter: str
) -> None:
    body = {k: v for k, v in body.items() if v is not None}
    resp = await client.simulate_post("/factor/cross-section", json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json["error"]["parameter"] == parameter, resp.text


async def test_non_finite_numbers_and_too_many_cells_are_refused(
    client: testing.ASGIConductor, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = {"content-type": "application/json"}
    text = json.dumps(bad()).replace("0.02", "1e999", 1)
    resp = await client.simulate_post("/factor/cross-section", body=text, headers=headers)
    assert resp.status_code == 400 and resp.json["error"]["parameter"] == "returns[0][1]"
    text = json.dumps(bad()).replace("2.0", "-1e999", 1)
    resp = await client.simulate_post("/factor/cross-section", body=text, headers=headers)
    assert resp.status_code == 400
    assert resp.json["error"]["parameter"] == "characteristics.size[0][1]"
    monkeypatch.setattr(cross_section, "MAX_PANEL_CELLS", 11)
    resp = await client.simulate_post("/factor/cross-section", json=bad())
    assert resp.status_code == 400 and resp.json["error"]["parameter"] == "dates", resp.text
    resp = await client.simulate_post("/factor/cross-section", json=UNIVERSE)
    assert resp.status_code == 400 and resp.json["error"]["parameter"] == "universe", resp.text


async def test_the_openapi_document_lists_the_route_with_its_body(
    client: testing.ASGIConductor,
) -> None:
    document = (await client.simulate_get("/openapi.json")).json
    operation = document["paths"]["/factor/cross-section"]["post"]
    assert {"400", "413"} <= set(operation["responses"])
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert {"dates", "symbols", "returns", "characteristics", "weights", "universe", "from",
            "to", "horizon", "quantiles", "nw_lags"} == set(schema["properties"])  # fmt: skip
