"""Factor engine: daily bars of the bundled universe in, ``factor.market.SYM`` out equal to
statsmodels ``RollingOLS`` (and its HAC) bar by bar; ``factor.ic.<signal>`` equal to the core's
per-date IC (itself equal to ``scipy.stats.spearmanr``); no look-ahead (perturbing bars after t
changes nothing published for dates before t); live bus = deterministic driver; bad input counted
and skipped; the settings' checks."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import statsmodels.api as sm
from linearmodels.datasets import french as linearmodels_french
from statsmodels.regression.rolling import RollingOLS

from engines.factor import core
from engines.factor.service import FactorConfig, FactorEngine, field_value
from engines.shell import load_config
from engines.shell.driver import DeterministicDriver
from protocol.records import Bar, encode
from protocol.schemas import check_payload
from realtime.bus import Envelope, MemoryBus
from realtime.clock import ManualClock
from tests.engines.factor.conftest import Universe
from tests.engines.factor.test_core import assert_close
from tests.support import until

DAY_NS = 86_400_000_000_000
TICKERS = ["SPY", "AAPL", "AIG", "BAC", "IWM", "QQQ", "WM", "EEM"]
FAST: dict[str, Any] = {"warmup_bars": 0, "warmup_symbols": 0, "bar_spec": "1d"}


def day_ns(date: np.datetime64) -> int:
    return int(date.astype("datetime64[ns]").astype(np.int64))


def bar_payload(symbol: str, date: np.datetime64, close: float, volume: float) -> dict[str, Any]:
    start = day_ns(date)
    return encode(
        Bar(
            symbol=symbol,
            spec="1d",
            start_ns=start,
            end_ns=start + DAY_NS,
            open=close,
            high=close,
            low=close,
            close=close,
            volume=volume,
            dollar_volume=close * volume,
            trades=0,
        )
    )


def features_payload(ticker: str, t: int, value: float) -> dict[str, Any]:
    return {"source": "features", "symbol": ticker, "event_ns": t,
            "values": {"mom": None if math.isnan(value) else float(value)}}  # fmt: skip


def recording(
    universe: Universe,
    rows: slice,
    signal: np.ndarray | None = None,
    kind: str = "features",
    make: Any = features_payload,
) -> list[Envelope]:
    """Bars of ``TICKERS`` date by date (and after each date, when given, a ``<kind>.SYM``
    message carrying ``signal`` at the bar's end, its payload ``make(ticker, t, value)``)."""
    out: list[Envelope] = []
    seq = 0
    cols = [universe.tickers.index(t) for t in TICKERS]
    for d in range(len(universe.dates))[rows]:
        date = universe.dates[d]
        t = day_ns(date) + DAY_NS
        for j, ticker in zip(cols, TICKERS, strict=True):
            close = universe.close[d, j]
            if not math.isfinite(close):
                continue
            seq += 1
            payload = bar_payload(ticker, date, float(close), float(universe.volume[d, j]))
            out.append(Envelope(f"bars.1d.{ticker}", seq, "e", t, t, payload))
        if signal is not None:
            for j, ticker in zip(cols, TICKERS, strict=True):
                seq += 1
                payload = make(ticker, t, float(signal[d, j]))
                out.append(Envelope(f"{kind}.{ticker}", seq, "e", t, t, payload))
    return out


async def drive(config: FactorConfig, messages: list[Envelope]) -> tuple[FactorEngine, list[Any]]:
    clock = ManualClock(0)
    engine = FactorEngine(config, bus=MemoryBus(clock=clock), clock=clock)
    outputs = await DeterministicDriver(engine).run(messages)
    return engine, outputs


ROWS = slice(-900, None)  # 2017-10 .. 2021-03: every ticker of TICKERS trades


async def test_published_exposures_equal_statsmodels(universe: Universe) -> None:
    config = FactorConfig(**FAST, window=60)
    engine, outputs = await drive(config, recording(universe, ROWS))
    published: dict[str, list[dict[str, Any]]] = {}
    for e in outputs:
        published.setdefault(e.channel, []).append(e.payload)
    assert set(published) == {f"factor.market.{t}" for t in TICKERS}
    spy = universe.column("SPY")[ROWS]
    x = spy[1:] / spy[:-1] - 1.0
    for ticker in ("AAPL", "BAC", "QQQ"):
        close = universe.column(ticker)[ROWS]
        y = close[1:] / close[:-1] - 1.0
        ref = RollingOLS(y, sm.add_constant(x), window=60).fit()
        rows = published[f"factor.market.{ticker}"]
        assert len(rows) == len(y)  # one message per bar after the first
        assert [r["start_ns"] for r in rows] == [day_ns(d) for d in universe.dates[ROWS][1:]]
        first = rows[0]
        assert first["alpha"] is None and first["n"] == 1 and first["factors"] == ["SPY"]
        got = np.array(
            [
                [
                    np.nan if r["alpha"] is None else r["alpha"],
                    np.nan if r["betas"]["SPY"] is None else r["betas"]["SPY"],
                ]
                for r in rows
            ]
        )
        assert_close(got, ref.params, label=ticker)
        t_beta = np.array(
            [np.nan if r["t_betas"]["SPY"] is None else r["t_betas"]["SPY"] for r in rows]
        )
        assert_close(t_beta, ref.tvalues[:, 1], label=f"{ticker} t")
        r2 = np.array([np.nan if r["r2"] is None else r["r2"] for r in rows])
        assert_close(r2, ref.rsquared, label=f"{ticker} r2")
        last = len(y)
        hac = sm.OLS(y[last - 60 : last], sm.add_constant(x[last - 60 : last])).fit(
            cov_type="HAC", cov_kwds={"maxlags": None}
        )
        assert rows[-1]["hac_t_betas"]["SPY"] == pytest.approx(hac.tvalues[1], rel=1e-9)
        assert rows[-1]["resid_vol"] == pytest.approx(math.sqrt(ref.mse_resid[-1]), rel=1e-9)
    spy_rows = published["factor.market.SPY"]
    assert spy_rows[-1]["betas"]["SPY"] == pytest.approx(1.0, abs=1e-12)
    assert spy_rows[-1]["t_betas"]["SPY"] is None  # a perfect fit: no finite t
    latest = await engine.exposures.latest("AAPL")
    assert latest == published["factor.market.AAPL"][-1]
    assert engine.published_total._value.get() == len(outputs)


async def test_ic_of_a_signal_equals_the_per_date_spearman(universe: Universe) -> None:
    chars = core.characteristics(universe.close, universe.volume, universe.column("SPY"))
    cols = [universe.tickers.index(t) for t in TICKERS]
    signal = np.full_like(universe.close, np.nan)
    signal[:, cols] = chars["momentum"][:, cols]
    config = FactorConfig(**FAST, ic_signal="features:values.mom", ic_horizons=(1, 5))
    engine, outputs = await drive(config, recording(universe, ROWS, signal))
    ics = [e for e in outputs if e.channel == "factor.ic.features_mom"]
    close = universe.close[ROWS][:, cols]
    sig = signal[ROWS][:, cols]
    for h in (1, 5):
        want = core.information_coefficient(sig, core.forward_returns(close, h))
        got = [e.payload for e in ics if e.payload["horizon"] == h]
        # every date but the last resolvable one is closed (a later date closes it)
        assert len(got) == np.isfinite(want).sum() - 1
        assert [g["start_ns"] for g in got] == [
            day_ns(d) for d in universe.dates[ROWS][np.isfinite(want)][:-1]
        ]
        np.testing.assert_allclose(
            [g["ic"] for g in got], want[np.isfinite(want)][:-1], rtol=0, atol=1e-12
        )
        summary = core.ic_summary(want[np.isfinite(want)][:-1])
        assert got[-1]["n"] == summary.n and got[-1]["mean"] == pytest.approx(summary.mean)
        assert got[-1]["t"] == pytest.approx(summary.t, rel=1e-9)
        assert engine.running_ic[h].n == summary.n


def ml_payload(ticker: str, t: int, value: float) -> dict[str, Any]:
    """engines/ml's prediction message (``protocol.schemas`` ``MlPayload``); the probability a
    monotone map of ``value`` (null while it is NaN, as a model that has not learned yet)."""
    probability = None if math.isnan(value) else 1.0 / (1.0 + math.exp(-10.0 * value))
    payload = {"model": "logistic", "symbol": ticker, "version": 1,
               "prediction": float(probability is not None and probability > 0.5),
               "probability": probability, "bet_size": None, "event_ns": t, "bar_end_ns": t,
               "learned": 10, "drifts": 0, "drift": False, "metrics": {"n": 10.0}}  # fmt: skip
    check_payload(f"ml.logistic.{ticker}", payload)
    return payload


async def test_ic_of_ml_predictions_from_a_dotted_kind(universe: Universe) -> None:
    """``ml.logistic:probability`` consumes ``ml.logistic.*`` (three-segment channels); the IC of
    the probability (a monotone map of momentum) equals momentum's per-date IC."""
    chars = core.characteristics(universe.close, universe.volume, universe.column("SPY"))
    cols = [universe.tickers.index(t) for t in TICKERS]
    signal = np.full_like(universe.close, np.nan)
    signal[:, cols] = chars["momentum"][:, cols]
    config = FactorConfig(**FAST, ic_signal="ml.logistic:probability", ic_horizons=(1, 5))
    assert config.signal_name() == "ml_logistic_probability"
    messages = recording(universe, ROWS, signal, kind="ml.logistic", make=ml_payload)
    engine, outputs = await drive(config, messages)
    assert "ml.logistic.*" in engine.inputs()
    ics = [e.payload for e in outputs if e.channel == "factor.ic.ml_logistic_probability"]
    close = universe.close[ROWS][:, cols]
    sig = signal[ROWS][:, cols]
    for h in (1, 5):
        want = core.information_coefficient(sig, core.forward_returns(close, h))
        got = [g for g in ics if g["horizon"] == h]
        assert len(got) == np.isfinite(want).sum() - 1 > 100
        np.testing.assert_allclose(
            [g["ic"] for g in got], want[np.isfinite(want)][:-1], rtol=0, atol=1e-12
        )
        assert got[-1]["source"] == "ml.logistic:probability"
    assert engine.health()["bad_input"] == {}


async def test_non_finite_signal_values_are_counted_as_bad_input() -> None:
    config = FactorConfig(**FAST, ic_signal="features:values.mom")
    t = 1_600_000_000_000_000_000
    values: list[Any] = [math.nan, math.inf, -math.inf, 10**400, "x", True, None, 0.5]
    messages = [
        Envelope(
            "features.AAPL", i, "e", t, t, {"symbol": "AAPL", "event_ns": t, "values": {"mom": v}}
        )
        for i, v in enumerate(values)
    ]
    engine, _ = await drive(config, messages)
    # NaN, ±inf, an int beyond float, a string, a bool: counted; null (warm-up) and 0.5 not
    assert engine.health()["bad_input"] == {"features.*": {"invalid_signal": 6}}
    assert list(engine.symbols["AAPL"].signals) == [(t, 0.5)]
    assert engine.health()["errors"] == 0


async def test_every_ready_bar_of_a_batch_is_regressed_in_one_update(
    universe: Universe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's path: one ``RollingOls.update`` per input batch for every symbol whose bar
    is ready (HAC on); what it publishes, and in what order, is the same whatever the batches
    — one batch for everything, one per message, or one per date."""
    chars = core.characteristics(universe.close, universe.volume, universe.column("SPY"))
    config = FactorConfig(**FAST, window=40, ic_signal="features:values.mom", ic_horizons=(1,))
    assert config.hac
    messages = recording(universe, slice(-150, None), chars["momentum"])
    sizes: list[int] = []
    update = core.RollingOls.update

    def counted(self: core.RollingOls, slots: Any, y: Any, x: Any) -> core.Fit:
        sizes.append(len(slots))
        return update(self, slots, y, x)

    monkeypatch.setattr(core.RollingOls, "update", counted)
    _, whole = await drive(config, messages)
    # one batch: round r takes every symbol's r-th ready bar
    assert sizes[:3] == [len(TICKERS)] * 3 and len(sizes) == 149

    async def in_batches(batches: list[list[Envelope]]) -> list[Envelope]:
        clock = ManualClock(0)
        engine = FactorEngine(config, bus=MemoryBus(clock=clock), clock=clock)
        driver = DeterministicDriver(engine)
        return [e for batch in batches for e in await driver.run(batch)]

    sizes.clear()
    one_by_one = await in_batches([[m] for m in messages])
    assert set(sizes) == {1}  # a message at a time: a bar at a time
    dates: dict[int, list[Envelope]] = {}
    for m in messages:
        dates.setdefault(m.event_ns, []).append(m)
    sizes.clear()
    per_date = await in_batches(list(dates.values()))
    assert max(sizes) == len(TICKERS) and len(sizes) == 149
    want = [(e.channel, e.payload) for e in whole]
    assert any(c.startswith("factor.ic.") for c, _ in want)
    assert [(e.channel, e.payload) for e in one_by_one] == want
    assert [(e.channel, e.payload) for e in per_date] == want


async def test_spread_factor_exposures_equal_statsmodels(universe: Universe) -> None:
    """``factors = SPY,IWM-SPY``: the spread's return per bar is IWM's minus SPY's; published
    exposures equal statsmodels ``RollingOLS`` (and its HAC) on [1, SPY, IWM − SPY]."""
    config = FactorConfig(**FAST, factors=("SPY", "IWM-SPY"), window=60)
    engine, outputs = await drive(config, recording(universe, ROWS))
    published: dict[str, list[dict[str, Any]]] = {}
    for e in outputs:
        published.setdefault(e.channel, []).append(e.payload)
    assert set(published) == {f"factor.market.{t}" for t in TICKERS}

    def returns(ticker: str) -> np.ndarray:
        close: np.ndarray = universe.column(ticker)[ROWS]
        out: np.ndarray = close[1:] / close[:-1] - 1.0
        return out

    spy, iwm = returns("SPY"), returns("IWM")
    design = sm.add_constant(np.column_stack([spy, iwm - spy]))
    for ticker in ("AAPL", "BAC", "EEM"):
        y = returns(ticker)
        ref = RollingOLS(y, design, window=60).fit()
        rows = published[f"factor.market.{ticker}"]
        assert len(rows) == len(y) and rows[-1]["factors"] == ["SPY", "IWM-SPY"]

        def column(name: str, key: str | None, rows: list[dict[str, Any]] = rows) -> np.ndarray:
            got = [r[name] if key is None else r[name][key] for r in rows]
            return np.array([np.nan if v is None else v for v in got])

        params = np.column_stack(
            [column("alpha", None), column("betas", "SPY"), column("betas", "IWM-SPY")]
        )
        assert_close(params, ref.params, label=ticker)
        assert_close(column("t_betas", "IWM-SPY"), ref.tvalues[:, 2], label=f"{ticker} t")
        assert_close(column("r2", None), ref.rsquared, label=f"{ticker} r2")
        n = len(y)
        hac = sm.OLS(y[n - 60 :], design[n - 60 :]).fit(cov_type="HAC", cov_kwds={"maxlags": None})
        assert rows[-1]["hac_t_betas"]["IWM-SPY"] == pytest.approx(hac.tvalues[2], rel=1e-9)
    iwm_row = published["factor.market.IWM"][-1]  # IWM = SPY + (IWM − SPY): a perfect fit
    assert iwm_row["betas"] == pytest.approx({"SPY": 1.0, "IWM-SPY": 1.0}, abs=1e-9)
    assert engine.skipped_total.labels("unmatched")._value.get() == 0


async def test_no_look_ahead_in_published_exposures_and_ics(universe: Universe) -> None:
    """Replace every bar and signal after a cut time: everything published with an event time
    (the newest market time behind it) up to the cut is unchanged, byte for byte."""
    chars = core.characteristics(universe.close, universe.volume, universe.column("SPY"))
    rows = slice(-300, None)
    config = FactorConfig(**FAST, window=40, ic_signal="features:values.mom", ic_horizons=(1, 5))
    base = recording(universe, rows, chars["momentum"])
    cut_ns = day_ns(universe.dates[rows][200])
    rng = np.random.default_rng(7)
    changed = []
    for e in base:
        payload = dict(e.payload)
        if e.event_ns > cut_ns:  # the bar's end (and the signal's time) is after the cut
            if e.channel.startswith("bars."):
                payload["c"] = float(payload["c"]) * float(rng.uniform(0.5, 1.5))
            else:
                payload["values"] = {"mom": float(rng.normal())}
        changed.append(Envelope(e.channel, e.seq, e.epoch, e.event_ns, e.publish_ns, payload))
    _, a = await drive(config, base)
    _, b = await drive(config, changed)

    def before_cut(outputs: list[Envelope]) -> list[tuple[str, dict[str, Any]]]:
        return [(e.channel, e.payload) for e in outputs if e.payload["event_ns"] <= cut_ns]

    assert len(before_cut(a)) > 1000
    assert {c for c, _ in before_cut(a)} >= {"factor.ic.features_mom", "factor.market.AAPL"}
    assert before_cut(a) == before_cut(b)
    assert [e.payload for e in a] != [e.payload for e in b]


async def test_live_bus_equals_the_driver_and_bad_input_is_counted(universe: Universe) -> None:
    messages = recording(universe, slice(-120, None))
    bad = [
        Envelope("bars.1d.AAPL", 0, "e", 1, 1, {"s": "AAPL"}),  # not a bar
        Envelope("bars.1d.AAPL", 0, "e", 1, 1, dict(messages[1].payload, c=-1.0)),
        Envelope("bars.1d.AAPL", 0, "e", 1, 1, dict(messages[1].payload, spec="1m")),
    ]
    messages = messages[:20] + bad + [messages[1]] + messages[20:]  # + a stale AAPL bar
    clock = ManualClock(0)
    live = FactorEngine(FactorConfig(**FAST), bus=MemoryBus(clock=clock), clock=clock)
    sub = live.bus.subscribe("factor.>")
    await live.start()
    try:
        for m in messages:
            await live.bus.publish(m.channel, m.payload, event_ns=m.event_ns)
        await until(lambda: live.backlog() == 0 and sub.pending >= 7 * 119)
        live_out = await sub.next_batch(1 << 16)
        counted = live.health()["bad_input"]["bars.1d.*"]  # type: ignore[index]
        assert counted == {
            "missing_field": 1, "invalid_value": 1, "wrong_spec": 1, "out_of_order": 1
        }  # fmt: skip
        assert live.health()["errors"] == 0 and live.state.value == "running"
    finally:
        await live.stop()
    _, driven = await drive(FactorConfig(**FAST), messages)
    assert [(e.channel, e.payload) for e in driven] == [(e.channel, e.payload) for e in live_out]


async def test_a_bar_without_a_factor_bar_is_dropped_not_stuck() -> None:
    config = FactorConfig(**FAST, window=5)
    t0 = 1_600_000_000_000_000_000

    def bar(symbol: str, i: int, close: float) -> Envelope:
        date = np.datetime64(t0 + i * DAY_NS, "ns").astype("datetime64[D]")
        return Envelope(f"bars.1d.{symbol}", i, "e", 0, 0, bar_payload(symbol, date, close, 1.0))

    messages = [bar("SPY", 0, 100.0), bar("AAPL", 0, 50.0), bar("AAPL", 1, 51.0)]
    messages += [bar("SPY", 2, 101.0), bar("AAPL", 2, 52.0), bar("SPY", 3, 99.0)]
    messages += [bar("AAPL", 3, 50.0)]
    engine, outputs = await drive(config, messages)
    aapl = [e.payload["start_ns"] for e in outputs if e.channel == "factor.market.AAPL"]
    # AAPL day 1: SPY has no bar that day (dropped); day 2: SPY's return spans days 0→2
    assert aapl == [t0 + 2 * DAY_NS - (t0 % DAY_NS), t0 + 3 * DAY_NS - (t0 % DAY_NS)]
    assert engine.skipped_total.labels("unmatched")._value.get() == 1


def test_settings_are_checked() -> None:
    config = load_config(
        FactorConfig,
        {
            "NAUTILUS_FACTOR_FACTORS": "SPY,QQQ,IWM",
            "NAUTILUS_FACTOR_HAC_LAGS": "3",
            "NAUTILUS_FACTOR_IC_SIGNAL": "vpin:vpin",
        },
    )
    assert config.factors == ("SPY", "QQQ", "IWM") and config.hac_lags == 3
    assert config.signal_name() == "vpin_vpin"
    ml = FactorConfig(ic_signal="ml.hoeffding:probability")
    assert "ml.hoeffding.*" in FactorEngine(ml, bus=MemoryBus(), clock=ManualClock(0)).inputs()
    for bad in (
        {"factors": ()},
        {"factors": ("SPY", "SPY")},
        {"factors": ("SPY-SPY",)},
        {"factors": ("IWM-",)},
        {"factors": ("A-B-C",)},
        {"window": 2},
        {"decay": 0.0},
        {"model": "a.b"},
        {"ic_signal": "features"},
        {"ic_signal": "ml..logistic:probability"},
        {"ic_signal": "bars.1m:c"},
        {"ic_signal": "features:values.x", "ic_name": "a.b"},
        {"ic_horizons": (0,)},
        {"ic_min_symbols": 1},
        {"window": 0, "hac": True},
        {"bar_spec": "nope"},
    ):
        with pytest.raises(ValueError):
            FactorConfig(**bad)
    assert field_value({"values": {"rsi": 3.0}}, "values.rsi") == 3.0
    assert field_value({"values": 3.0}, "values.rsi") is None


async def test_start_compiles_the_shape_the_docstring_states(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``on_start`` warms one batch shape (4096 bars × 8 symbols × the configured factors); the
    docstring's count of the other padded shapes (compiled on first use) holds."""
    warmed: list[tuple[int, ...]] = []
    monkeypatch.setattr(core, "warm_up", lambda *shape: warmed.append(shape))
    clock = ManualClock(0)
    config = FactorConfig(factors=("SPY", "QQQ", "IWM"))
    engine = FactorEngine(config, bus=MemoryBus(clock=clock), clock=clock)
    await engine.start()
    await engine.stop()
    assert warmed == [(4096, 8, 3)]
    bars = {core.padded(n, core.MIN_PADDED_BARS) for n in range(1, config.max_batch_bars + 1)}
    symbols = {
        core.padded(n, core.MIN_PADDED_SYMBOLS) for n in range(1, config.max_batch_symbols + 1)
    }
    assert (len(bars), len(symbols)) == (36, 25)
    assert [core.padded(n, core.MIN_PADDED_BARS) for n in (3584, 3585, 4096)] == [3584, 4096, 4096]
    assert sorted(symbols)[:10] == [8, 10, 12, 14, 16, 20, 24, 28, 32, 40]
    assert sorted(symbols)[-3:] == [384, 448, 512]


async def test_a_bar_whose_symbol_cannot_name_a_channel_is_bad_input_and_costs_nothing_else(
    universe: Universe,
) -> None:
    """``BRK.B`` is a valid bar but no channel segment: counted ``invalid_symbol`` before any
    state changes; every other symbol of the same batches is regressed and published as
    without it."""
    clean = recording(universe, slice(-40, None))
    poisoned: list[Envelope] = []
    for e in clean:
        poisoned.append(e)
        if e.channel == "bars.1d.AAPL":
            payload = {**e.payload, "s": "BRK.B"}
            poisoned.append(Envelope("bars.1d.BRKB", e.seq, "e", e.event_ns, e.publish_ns, payload))
    config = FactorConfig(**FAST, window=20)
    _, expected = await drive(config, clean)
    engine, outputs = await drive(config, poisoned)
    assert [(e.channel, e.payload) for e in outputs] == [(e.channel, e.payload) for e in expected]
    assert engine.health()["bad_input"] == {"bars.1d.*": {"invalid_symbol": 40}}
    assert engine.health()["errors"] == 0


def french_file(path: Path, dates: np.ndarray, *, missing: int, absent: int) -> np.ndarray:
    """A daily factor file in Kenneth French's layout (percent, two decimals) holding
    linearmodels' French factors (MktRF, SMB, HML, RF; real numbers, monthly ones laid on these
    dates), the value of Mkt-RF on date ``missing`` marked -99.99 and date ``absent`` left out.
    Returns the values as the file states them, in decimals (NaN where missing or absent)."""
    french = linearmodels_french.load()[["MktRF", "SMB", "HML", "RF"]].to_numpy()
    percent = np.round(french[: len(dates)] * 100.0, 2)
    percent[missing, 0] = -99.99
    lines = ["Made from linearmodels.datasets.french for a test.", "", ",Mkt-RF,SMB,HML,RF"]
    for i, date in enumerate(dates):
        if i != absent:
            stamp = str(date).replace("-", "")
            lines.append(stamp + "," + ",".join(f"{v:8.2f}" for v in percent[i]))
    path.write_text("\n".join([*lines, "", "Copyright notice"]) + "\n")
    values = np.array([[float(f"{v:.2f}") * 0.01 for v in row] for row in percent])
    values[[missing, absent]] = np.nan
    return values


async def test_fama_french_factors_from_a_file_equal_statsmodels(
    universe: Universe, tmp_path: Path
) -> None:
    """``factor_file`` = a French daily CSV: each symbol's excess return (bar return − RF of the
    bar's date) on Mkt-RF, SMB, HML equals statsmodels ``RollingOLS`` and its HAC; a date whose
    row is missing a value or absent is not regressed (counted ``unmatched``)."""
    rows_used = slice(-800, None)  # linearmodels holds 819 months
    dates = universe.dates[rows_used]
    factors = french_file(tmp_path / "ff.csv", dates, missing=100, absent=200)
    config = FactorConfig(
        **FAST,
        model="ff3",
        factors=("Mkt-RF", "SMB", "HML"),
        factor_file=str(tmp_path / "ff.csv"),
        window=60,
    )
    engine, outputs = await drive(config, recording(universe, rows_used))
    published: dict[str, list[dict[str, Any]]] = {}
    for e in outputs:
        published.setdefault(e.channel, []).append(e.payload)
    assert set(published) == {f"factor.ff3.{t}" for t in TICKERS}
    keep = np.isfinite(factors[1:]).all(axis=1)  # a return's date is its bar's
    for ticker in ("SPY", "AAPL", "BAC"):
        close = universe.column(ticker)[rows_used]
        y = (close[1:] / close[:-1] - 1.0 - factors[1:, 3])[keep]
        x = sm.add_constant(factors[1:, :3][keep])
        ref = RollingOLS(y, x, window=60).fit()
        rows = published[f"factor.ff3.{ticker}"]
        assert [r["start_ns"] for r in rows] == [day_ns(d) for d in dates[1:][keep]]
        assert rows[-1]["factors"] == ["Mkt-RF", "SMB", "HML"] and rows[-1]["risk_free"] == "RF"
        for name, column in (("Mkt-RF", 1), ("SMB", 2), ("HML", 3)):
            got = np.array([np.nan if r["betas"][name] is None else r["betas"][name] for r in rows])
            assert_close(got, ref.params[:, column], label=f"{ticker} {name}")
        alpha = np.array([np.nan if r["alpha"] is None else r["alpha"] for r in rows])
        assert_close(alpha, ref.params[:, 0], label=f"{ticker} alpha")
        n = len(y)
        hac = sm.OLS(y[n - 60 :], x[n - 60 :]).fit(cov_type="HAC", cov_kwds={"maxlags": None})
        assert rows[-1]["hac_t_betas"]["HML"] == pytest.approx(hac.tvalues[3], rel=1e-9)
        check_payload(f"factor.ff3.{ticker}", rows[-1])
    assert engine.skipped_total.labels("unmatched")._value.get() == 2 * len(TICKERS)
    summary = engine.health()["factor_file"]
    assert summary == {
        "path": str(tmp_path / "ff.csv"),
        "days": len(dates) - 2,
        "first": str(dates[0]),
        "last": str(dates[-1]),
        "risk_free": "RF",
    }


def test_a_factor_file_is_checked_at_start(tmp_path: Path) -> None:
    path = tmp_path / "ff.csv"
    path.write_text(",Mkt-RF,SMB,RF\n20200316,-12.00,0.50,0.01\n")
    good = {**FAST, "factors": ("Mkt-RF", "SMB"), "factor_file": str(path)}
    engine = FactorEngine(FactorConfig(**good), bus=MemoryBus(), clock=ManualClock(0))
    assert engine.file_rows == {18337: ([-0.12, 0.005], 0.0001)}
    raw = FactorConfig(**{**good, "risk_free": "", "factor_file_units": "decimal"})
    assert FactorEngine(raw, bus=MemoryBus(), clock=ManualClock(0)).file_rows == {
        18337: ([-12.0, 0.5], 0.0)
    }
    for bad, says in (
        ({"factors": ("Mkt-RF", "HML")}, "no column HML"),
        ({"factor_file": str(tmp_path / "absent.csv")}, "absent.csv"),
    ):
        with pytest.raises(ValueError, match=says):
            FactorEngine(FactorConfig(**{**good, **bad}), bus=MemoryBus(), clock=ManualClock(0))
    for bad_config in (
        {"bar_spec": "1m"},
        {"factor_file_units": "basis points"},
        {"factors": ("Mkt-RF", "RF")},
    ):
        with pytest.raises(ValueError):
            FactorConfig(**{**good, **bad_config})
    path.write_text(",Mkt-RF,SMB,RF\n192607,2.96,-2.30,0.22\n")
    with pytest.raises(ValueError, match="monthly"):
        FactorEngine(FactorConfig(**good), bus=MemoryBus(), clock=ManualClock(0))
