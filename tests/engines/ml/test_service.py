"""ML engine on a MemoryBus: real SPY minute bars and features messages in, ``ml.<model>.SYM``
out equal to the core's prequential run (itself equal to river) bar by bar for every model
(SGD logistic and linear, Hoeffding tree, bagged trees), whichever order the two streams
interleave in; warm-up nulls skipped; drift resets (Page–Hinkley or ADWIN) bump the version; bad
input counted; the payload is what Strategy's ML-bet strategy reads."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest

from engines.marketdata import feeds
from engines.ml import core
from engines.ml.service import MlConfig, MlEngine
from engines.shell import load_config
from engines.strategy.service import signal_of
from protocol.records import Bar, encode
from realtime.bus import Envelope, MemoryBus, Subscription
from realtime.clock import ManualClock
from tests.support import until

MIN_NS = 60_000_000_000
KEYS = ("r1", "r5", "range")
WARM = 5  # bars whose features are null (warm-up)
N = 400
HORIZON = 3


@pytest.fixture(scope="module")
def spy() -> dict[str, np.ndarray]:
    day = feeds.read_lean_minute_trades(feeds.lean_minute_trade_path(feeds.lean_days()[0]))
    return {f: getattr(day, f)[:N] for f in ("start_ns", "open", "high", "low", "close", "volume")}


def bar(spy: dict[str, np.ndarray], i: int, **change: Any) -> dict[str, Any]:
    start = int(spy["start_ns"][i])
    fields: dict[str, Any] = {
        "symbol": "SPY", "spec": "1m", "start_ns": start, "end_ns": start + MIN_NS,
        **{f: float(spy[f][i]) for f in ("open", "high", "low", "close", "volume")},
        "dollar_volume": 1.0, "trades": 1,
    }  # fmt: skip
    return encode(Bar(**(fields | change)))


def feature_rows(spy: dict[str, np.ndarray]) -> np.ndarray:
    """Three features known at each bar's close (NaN during the first WARM bars)."""
    c = spy["close"]
    x = np.full((N, 3), np.nan)
    for i in range(WARM, N):
        x[i] = (c[i] / c[i - 1] - 1, c[i] / c[i - 5] - 1, (spy["high"][i] - spy["low"][i]) / c[i])
    return x


def features(spy: dict[str, np.ndarray], x: np.ndarray, i: int, **change: Any) -> dict[str, Any]:
    start = int(spy["start_ns"][i])
    values = {k: None if np.isnan(v) else float(v) for k, v in zip(KEYS, x[i], strict=True)}
    return {"source": "features", "symbol": "SPY", "spec": "1m", "start_ns": start,
            "end_ns": start + MIN_NS, "event_ns": start + MIN_NS, "values": values} | change  # fmt: skip


@asynccontextmanager
async def running(config: MlConfig) -> AsyncIterator[MlEngine]:
    clock = ManualClock(0)
    engine = MlEngine(config, bus=MemoryBus(clock=clock), clock=clock)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.stop()


async def collect(sub: Subscription, count: int) -> list[Envelope]:
    out: list[Envelope] = []
    while len(out) < count:
        out += await asyncio.wait_for(sub.next_batch(4096), 20)
    return out


CONFIG = MlConfig(features=KEYS, horizon=HORIZON, lr=0.05, l2=0.01, intercept_lr=0.02,
                  drift_threshold=1e9, features_wait_bars=1_000, tree_grace_period=40,
                  tree_delta=0.01, bagging_models=4, seed=5)  # fmt: skip


def reference(spy: dict[str, np.ndarray], x: np.ndarray, kind: str) -> core.PrequentialRun:
    c = spy["close"]
    rows = np.arange(WARM, N)
    ahead = np.minimum(rows + HORIZON, N - 1)
    ret = c[ahead] / c[rows] - 1
    y = (ret > 0).astype(float) if kind in core.CLASSIFIERS else ret
    spec = CONFIG.model_spec(kind, "SPY")
    return core.prequential_run(x[rows], y, np.arange(rows.size) + HORIZON, spec)


@pytest.mark.parametrize(
    "lag",
    [0, 2, N, -1],
    ids=["bar-first", "features-2-bars-late", "all-bars-first", "features-first"],
)
async def test_predictions_equal_the_prequential_reference_in_any_interleaving(
    spy: dict[str, np.ndarray], lag: int
) -> None:
    x = feature_rows(spy)
    async with running(CONFIG) as engine:
        subs = {m: engine.bus.subscribe(f"ml.{m}.*") for m in CONFIG.models}
        bus = engine.bus
        for i in range(N + max(lag, 0)):
            if lag >= 0:
                if i < N:
                    await bus.publish("bars.1m.SPY", bar(spy, i), event_ns=0)
                if 0 <= i - lag < N:
                    await bus.publish("features.SPY", features(spy, x, i - lag), event_ns=0)
            else:  # each features message before its bar
                await bus.publish("features.SPY", features(spy, x, i), event_ns=0)
                await bus.publish("bars.1m.SPY", bar(spy, i), event_ns=0)
        predicted = N - WARM
        untrained = 0
        assert set(subs) == set(core.ONLINE_MODELS)
        for model, sub in subs.items():
            want = reference(spy, x, model)
            answered = np.isfinite(want.predictions)  # a tree has no answer before its 1st label
            untrained += int((~answered).sum())
            got = [e.payload for e in await collect(sub, int(answered.sum()))]
            classifier = model in core.CLASSIFIERS
            values = [g["probability"] if classifier else g["prediction"] for g in got]
            np.testing.assert_allclose(
                values, want.predictions[answered], rtol=1e-12, atol=1e-15, err_msg=model
            )
            last = got[-1]
            assert last["event_ns"] == last["bar_end_ns"] == int(spy["start_ns"][N - 1]) + MIN_NS
            assert last["version"] == 1 and last["learned"] == predicted - HORIZON
            if classifier:
                assert [g["bet_size"] for g in got] == [core.bet_size(p) for p in values]
                assert [g["prediction"] for g in got] == [int(p > 0.5) for p in values]
                assert last["metrics"]["accuracy"] == pytest.approx(
                    want.metrics[-1]["accuracy"], abs=1e-12
                )
            else:
                assert last["bet_size"] is None and last["probability"] is None
                assert last["metrics"]["mae"] == pytest.approx(want.metrics[-1]["mae"], rel=1e-10)
        await until(lambda: engine.health()["samples"]["warming"] == WARM)  # type: ignore[index]
        assert engine.health()["samples"]["late"] == 0  # type: ignore[index]
        assert engine.health()["samples"]["untrained"] == untrained == 2 * HORIZON  # type: ignore[index]
        trees = engine.symbols["SPY"].models["hoeffding_tree"].learner.model  # type: ignore[attr-defined]
        assert trees.n_leaves > 1  # the reference comparison covered splits, not only a root


async def test_bad_input_is_counted_and_skipped(spy: dict[str, np.ndarray]) -> None:
    x = feature_rows(spy)
    async with running(CONFIG) as engine:
        bus = engine.bus
        sub = bus.subscribe("ml.logistic.*")
        for i in range(WARM + 2):
            await bus.publish("bars.1m.SPY", bar(spy, i), event_ns=0)
            await bus.publish("features.SPY", features(spy, x, i), event_ns=0)
        assert len(await collect(sub, 2)) == 2  # bars WARM, WARM + 1 predicted
        await bus.publish("bars.1m.SPY", bar(spy, 1), event_ns=0)  # out of order
        await bus.publish("bars.1m.SPY", bar(spy, WARM + 1), event_ns=0)  # duplicate
        await bus.publish("bars.1m.SPY", bar(spy, WARM + 3, spec="5m"), event_ns=0)
        await bus.publish("bars.1m.SPY", bar(spy, WARM + 3, close=0.0), event_ns=0)
        await bus.publish("bars.1m.SPY", {"s": "SPY"}, event_ns=0)
        await bus.publish(
            "features.SPY", features(spy, x, WARM + 3, values={"r1": 1.0}), event_ns=0
        )
        await bus.publish("features.SPY", features(spy, x, WARM + 3, spec="5m"), event_ns=0)
        await bus.publish("features.SPY", {"symbol": "SPY"}, event_ns=0)
        await bus.publish("features.SPY", features(spy, x, 0), event_ns=0)  # late
        # and the stream goes on
        await bus.publish("bars.1m.SPY", bar(spy, WARM + 2), event_ns=0)
        await bus.publish("features.SPY", features(spy, x, WARM + 2), event_ns=0)
        await bus.publish("features.SPY", features(spy, x, WARM + 4), event_ns=0)
        await bus.publish("features.SPY", features(spy, x, WARM + 4), event_ns=0)  # duplicate
        assert len(await collect(sub, 1)) == 1

        def bad() -> dict[str, dict[str, int]]:
            return engine.health()["bad_input"]  # type: ignore[return-value]

        await until(lambda: sum(bad().get("features.*", {}).values()) == 4)
        assert bad()["bars.1m.*"] == {"out_of_order": 1, "duplicate_bar": 1, "wrong_spec": 1,
                                      "invalid_value": 1, "missing_field": 1}  # fmt: skip
        assert bad()["features.*"] == {
            "missing_feature": 1,
            "wrong_spec": 1,
            "missing_field": 1,
            "duplicate_features": 1,
        }
        await until(lambda: engine.health()["samples"]["late"] == 1)  # type: ignore[index]
        assert engine.health()["status"] == "ok"


@pytest.mark.parametrize("detector, lr", [("page_hinkley", 0.2), ("adwin", 0.03)])
async def test_drift_resets_the_model_and_bumps_its_version(
    spy: dict[str, np.ndarray], detector: str, lr: float
) -> None:
    """The label flips meaning half-way (every up bar labelled as the feature's opposite): the
    drift test on the log loss (Page–Hinkley, or ADWIN: it tests every 32 values, so the model
    learns slower here and is not already re-adapted when it looks) fires, the model restarts
    at version 2."""
    config = MlConfig(features=("signal",), horizon=1, lr=lr, intercept_lr=lr / 4, models=("logistic",),
                      drift_threshold=5.0, drift_min_instances=30, drift_detector=detector,
                      adwin_delta=0.01)  # fmt: skip
    c = spy["close"]
    up = np.r_[c[1:] > c[:-1], False]
    sign = np.where(np.arange(N) < N // 2, 1.0, -1.0)  # the feature's meaning flips half-way
    x = np.where(up, 1.0, -1.0) * sign
    async with running(config) as engine:
        sub = engine.bus.subscribe("ml.logistic.*")
        for i in range(N):
            await engine.bus.publish("bars.1m.SPY", bar(spy, i), event_ns=0)
            payload = features(spy, np.zeros((N, 3)), i, values={"signal": float(x[i])})
            await engine.bus.publish("features.SPY", payload, event_ns=0)
        got = [e.payload for e in await collect(sub, N)]
        versions = [g["version"] for g in got]
        first_drift = next(i for i, g in enumerate(got) if g["drift"])
        assert versions[: N // 2] == [1] * (N // 2) and N // 2 < first_drift < N // 2 + 40
        assert versions[first_drift] == 2 and got[-1]["drifts"] >= 1
        # the restarted model learns the new meaning: late predictions agree with it
        late = got[-50:]
        agree = np.mean([(g["probability"] > 0.5) == (up[N - 50 + k]) for k, g in enumerate(late)])
        assert agree > 0.9
        health = engine.health()
        assert health["drift"]["logistic"]["SPY"] == got[-1]["drifts"]  # type: ignore[index]
        registry = engine.registry()
        assert registry["models"][0]["symbols"]["SPY"]["version"] == versions[-1]


def test_payload_is_what_the_ml_bet_strategy_reads() -> None:
    payload = {"model": "logistic", "symbol": "SPY", "version": 1, "prediction": 1,
               "probability": 0.7, "bet_size": core.bet_size(0.7), "event_ns": 5,
               "bar_end_ns": 5, "learned": 3, "drifts": 0, "drift": False,
               "metrics": {"n": 3}}  # fmt: skip
    envelope = Envelope(
        channel="ml.logistic.SPY", seq=1, epoch="e", event_ns=4, publish_ns=6, payload=payload
    )
    signal = signal_of("ml.logistic", "SPY", payload, envelope)
    assert signal.event_ns == 5 and signal.values["bet_size"] == core.bet_size(0.7)
    assert "metrics" not in signal.values


def test_settings_from_the_environment_and_their_checks() -> None:
    config = load_config(
        MlConfig, {"NAUTILUS_ML_HORIZON": "10", "NAUTILUS_ML_LABEL": "triple_barrier"}
    )
    assert config.horizon == 10 and config.label == "triple_barrier"
    for bad in ({"models": ("svm",)}, {"features": ()}, {"horizon": 0}, {"lr": -1.0},
                {"features": ("a", "a")}, {"label": "sign"}, {"models": ("bagging", "bagging")},
                {"drift_detector": "ddm"}, {"tree_leaf_prediction": "x"}, {"bagging_models": 0},
                {"tree_delta": 1.0}, {"tree_grace_period": 0}, {"adwin_delta": 0.0},
                {"tree_max_depth": -1}, {"walkforward_jobs": -1}):  # fmt: skip
        with pytest.raises(ValueError):
            MlConfig(**bad)
    jobs = load_config(MlConfig, {"NAUTILUS_ML_WALKFORWARD_JOBS": "3"})
    assert jobs.walkforward_jobs == 3 and jobs.fold_jobs() == 3
    assert MlConfig().fold_jobs() == len(os.sched_getaffinity(0)) >= 1


async def test_triple_barrier_labels_resolve_early(spy: dict[str, np.ndarray]) -> None:
    config = MlConfig(features=KEYS, label="triple_barrier", horizon=30, barrier_pt=0.5,
                      barrier_sl=0.5, vol_span=10, models=("logistic",))  # fmt: skip
    x = feature_rows(spy)
    async with running(config) as engine:
        sub = engine.bus.subscribe("ml.logistic.*")
        for i in range(N):
            await engine.bus.publish("features.SPY", features(spy, x, i), event_ns=0)
            await engine.bus.publish("bars.1m.SPY", bar(spy, i), event_ns=0)
        got = [e.payload for e in await collect(sub, N - WARM)]
    # labels: the streaming labeler over the same closes and EWMA widths
    c = spy["close"]
    vol = core.EwmaVolatility(10)
    widths = np.array([np.nan if (w := vol.update(float(v))) is None else w for v in c])
    touch, _, _ = core.triple_barrier_labels(c, np.nan_to_num(widths), 30, 0.5, 0.5)
    learned_by_end = sum(1 for i in range(WARM, N) if touch[i] >= 0)
    assert got[-1]["learned"] == learned_by_end
    assert learned_by_end > N - WARM - 30  # most resolve before the vertical barrier
