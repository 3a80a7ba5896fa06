"""Features vectorized path: the JAX path (``lax.map`` over symbols, ``lax.scan`` per row, x64,
compiled for a padded shape) equals the numpy path to 1e-12 and every row equals TA-Lib (0.8, the installed C library)
to 1e-9 with an identical NaN mask — on SPY minute bars (one row per day, and the whole run), the
bundled Lean daily files (13 tickers), and the edge cases of ``test_core`` (constant prices, gaps,
zero volume, a single bar, shorter than the lookback).

Both comparisons use ``test_core``'s measure: |a − b| ≤ tol · max(|b|, median |b| of the row);
JAX against numpy also floors the scale at the row's input level (median |first input|): XLA
contracts ``a·b + c`` into fused multiply-adds and rewrites divisions, so the two paths differ by
~1e-16 of the price level, which shows up as ~1e-12..1e-11 relative in outputs that difference
two price-level averages (MACD, APO, PPO, CCI, STDDEV, LINEARREG_SLOPE) and as ~1e-15 instead of
an exact 0 on a constant series. CCI (a difference divided by a small mean deviation) and MACDEXT
(SMA − SMA over 5,661 daily bars) still amplify that to ~2e-12: they are held to 1e-11
(``LOOSER``).
Every block is run through one program compiled by ``warm_up`` for a larger shape, so the padding
(rows and bars repeated at the end, then cut off) is exercised on every comparison.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import talib

from engines.features import core, vectorized
from engines.marketdata import daily, feeds
from tests.engines.features.test_core import EDGE, TALIB_NAMES

FIELDS = ("open", "high", "low", "close", "volume")
DATA_KEYS = {"real": "close", "real0": "high", "real1": "low"}
WARM = (16, 5661)
Block = dict[str, np.ndarray]
LOOSER = {"CCI": 1e-11, "MACDEXT": 1e-11}


def _stack(rows: list[dict[str, np.ndarray]]) -> Block:
    length = min(len(r["close"]) for r in rows)
    return {
        f: np.stack([np.asarray(r[f], dtype=np.float64)[-length:] for r in rows]) for f in FIELDS
    }


def _blocks() -> dict[str, Block]:
    days = [
        feeds.read_lean_minute_trades(feeds.lean_minute_trade_path(d)) for d in feeds.lean_days()
    ]
    minute_days = [{f: getattr(b, f) for f in FIELDS} for b in days]
    whole = {f: np.concatenate([d[f] for d in minute_days]) for f in FIELDS}
    bars = {t: daily.read_daily_bars(t) for t in daily.daily_tickers()}
    daily_rows = {
        t: {f: np.asarray(getattr(b, f), dtype=np.float64) for f in FIELDS} for t, b in bars.items()
    }
    long_daily = [r for r in daily_rows.values() if len(r["close"]) >= 5661]
    equal = ("random_walk", "constant", "gaps", "zero_volume", "flat_then_moving")
    return {
        "spy_minute_days": _stack(minute_days),
        "spy_minute_all": _stack([whole]),
        "daily_13_tickers": _stack(list(daily_rows.values())),
        "daily_longest": _stack(long_daily),
        "edge_300_bars": _stack([EDGE[c] for c in equal]),
        "edge_single_bar": _stack([EDGE["single_bar"]] * 2),
        "edge_short": _stack([EDGE["shorter_than_lookback"]]),
    }


BLOCKS = _blocks()


@pytest.fixture(scope="module", autouse=True)
def _warm() -> None:
    vectorized.warm_up(*WARM)


def _inputs(name: str, block: Block) -> dict[str, np.ndarray]:
    return {k: block[DATA_KEYS.get(k, k)] for k in core.CATALOG[name].inputs}


def assert_close(
    got: np.ndarray, ref: np.ndarray, tol: float, label: str, level: float = 0.0
) -> None:
    assert got.shape == ref.shape, label
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=f"{label} NaN mask")
    m = ~np.isnan(ref)
    if not m.any():
        return
    scale = max(float(np.median(np.abs(ref[m]))), level, 1e-300)
    err = np.abs(got[m] - ref[m]) / np.maximum(np.abs(ref[m]), scale)
    assert err.max() <= tol, (label, float(err.max()))


def check(name: str, block: Block, **params: Any) -> None:
    spec = core.CATALOG[name]
    inputs = _inputs(name, block)
    full = {p.name: p.default for p in spec.params} | params
    jx = vectorized.compute_many(name, inputs, **params)
    npy = vectorized.compute_many(name, inputs, backend="numpy", **params)
    assert len(jx) == len(npy) == len(spec.outputs)
    for label, a, b in zip(spec.outputs, jx, npy, strict=True):
        assert a.shape == block["close"].shape
        for row in range(a.shape[0]):
            level = float(np.median(np.abs(inputs[spec.inputs[0]][row]))) if a.shape[1] else 0.0
            tol = LOOSER.get(name, 1e-12)
            assert_close(a[row], b[row], tol, f"{name}.{label} row {row}: jax vs numpy", level)
    for row in range(block["close"].shape[0]):
        ref = getattr(talib, name)(*(inputs[k][row] for k in spec.inputs), **full)
        ref = ref if isinstance(ref, tuple) else (ref,)
        for label, a, r in zip(spec.outputs, jx, ref, strict=True):
            assert_close(a[row], r, 1e-9, f"{name}.{label} row {row}: vs TA-Lib")


def test_every_talib_function_is_vectorized() -> None:
    assert set(TALIB_NAMES) == vectorized.VECTORIZED


@pytest.mark.parametrize("block", sorted(BLOCKS))
@pytest.mark.parametrize("name", TALIB_NAMES)
def test_jax_equals_numpy_and_talib(name: str, block: str) -> None:
    check(name, BLOCKS[block])


OTHER_PARAMETERS: list[tuple[str, dict[str, Any]]] = [
    ("T3", {"timeperiod": 3, "vfactor": 0.3}),
    ("BBANDS", {"timeperiod": 9, "nbdevup": 1.5, "nbdevdn": 2.5, "matype": 1}),
    ("BBANDS", {"timeperiod": 7, "matype": 6}),
    ("SAR", {"acceleration": 0.05, "maximum": 0.3}),
    ("MACD", {"fastperiod": 26, "slowperiod": 12, "signalperiod": 5}),
    *[
        ("MACDEXT", {"fastmatype": t, "slowmatype": (t + 2) % 7, "signalmatype": (t + 4) % 7})
        for t in (0, 1, 2, 3, 4, 5, 6, 8)
    ],
    *[("STOCH", {"slowk_matype": t, "slowd_matype": t}) for t in (1, 2, 3, 5, 6, 8)],
    ("STOCHRSI", {"timeperiod": 9, "fastk_period": 3, "fastd_period": 2, "fastd_matype": 2}),
    *[("APO", {"fastperiod": 5, "slowperiod": 17, "matype": t}) for t in (0, 1, 2, 3, 4, 6, 8)],
    ("PPO", {"fastperiod": 30, "slowperiod": 10, "matype": 0}),
    ("ADXR", {"timeperiod": 3}),
    ("ULTOSC", {"timeperiod1": 20, "timeperiod2": 3, "timeperiod3": 9}),
    ("ATR", {"timeperiod": 1}),
    ("ADOSC", {"fastperiod": 12, "slowperiod": 4}),
    ("STDDEV", {"timeperiod": 20, "nbdev": 2.0}),
    ("VAR", {"timeperiod": 1}),
    ("CORREL", {"timeperiod": 5}),
    ("BETA", {"timeperiod": 20}),
    ("TRIX", {"timeperiod": 1}),
    ("LINEARREG", {"timeperiod": 50}),
    ("AROON", {"timeperiod": 3}),
    ("KAMA", {"timeperiod": 5}),
    ("TRIMA", {"timeperiod": 6}),
]


@pytest.mark.parametrize(("name", "params"), OTHER_PARAMETERS)
def test_other_parameters(name: str, params: dict[str, Any]) -> None:
    check(name, BLOCKS["spy_minute_days"], **params)


def test_rows_equal_the_streaming_kernels() -> None:
    block = BLOCKS["edge_300_bars"]
    for name in ("KAMA", "SAR", "ADXR", "MFI"):
        got = vectorized.compute_many(name, _inputs(name, block))
        for row in range(block["close"].shape[0]):
            one = {k: v[row] for k, v in _inputs(name, block).items()}
            for a, b in zip(got, core.compute(name, one), strict=True):
                assert_close(a[row], b, 1e-9, f"{name} row {row}")


@pytest.mark.parametrize("n", [2, 3, 5, 8, 15, 31])
def test_aroon_age_sparse_table_equals_its_definition(n: int) -> None:
    """Bars since the window's max/min, ties to the latest bar, against a scan of each window;
    small integers make ties common, and ``n`` covers powers of two and the overlapping join."""
    rng = np.random.default_rng(n)
    v = rng.integers(0, 4, size=(3, 200)).astype(np.float64)
    for maximum in (True, False):
        got = vectorized._aroon_age(vectorized._NP, v, n, maximum)
        want = np.empty((3, 200 - n + 1))
        for t in range(n - 1, 200):
            w = v[:, t - n + 1 : t + 1]
            best = w.max(axis=1) if maximum else w.min(axis=1)
            last = n - 1 - np.argmax((w == best[:, None])[:, ::-1], axis=1)
            want[:, t - n + 1] = n - 1 - last
        np.testing.assert_array_equal(got, want)


def test_warm_up_compiles_once_and_blocks_pad_into_it() -> None:
    assert vectorized.warm_up(*WARM, ["SMA", core.FeatureRequest("EMA", {"timeperiod": 9})]) <= 1
    assert vectorized.warm_up(*WARM, ["SMA", core.FeatureRequest("EMA", {"timeperiod": 9})]) == 0
    assert WARM in vectorized.warmed_shapes("SMA")
    assert WARM in vectorized.warmed_shapes("EMA", timeperiod=9)


def test_prepared_columns_equal_arrays_and_are_rechecked_where_stricter() -> None:
    block = BLOCKS["spy_minute_days"]
    columns = {f: vectorized.prepare(f, block[f]) for f in FIELDS}
    assert all(c.array.ctypes.data % 64 == 0 for c in columns.values())
    for name in ("ADOSC", "CORREL", "BBANDS"):
        spec = core.CATALOG[name]
        from_arrays = vectorized.compute_many(name, _inputs(name, block))
        prepared = {k: columns[DATA_KEYS.get(k, k)] for k in spec.inputs}
        for a, b in zip(vectorized.compute_many(name, prepared), from_arrays, strict=True):
            np.testing.assert_array_equal(a, b)
    # prepared as a real (negatives allowed), then passed where a volume must be non-negative
    negative = vectorized.prepare("real", -np.ones((2, 40)))
    with pytest.raises(core.FeatureInputError) as err:
        vectorized.compute_many("OBV", {"real": np.ones((2, 40)), "volume": negative})
    assert err.value.parameter == "volume"
    with pytest.raises(core.FeatureInputError) as err:
        vectorized.prepare("close", np.full((2, 40), np.inf))
    assert err.value.parameter == "close"


def test_empty_block() -> None:
    block = {f: np.zeros((3, 0)) for f in FIELDS}
    (out,) = vectorized.compute_many("SMA", {"real": block["close"]})
    assert out.shape == (3, 0)


@pytest.mark.parametrize(
    ("inputs", "parameter"),
    [
        ({"real": np.ones((2, 5)), "volume": np.ones((2, 4))}, "volume"),
        ({"real": np.ones(5), "volume": np.ones(5)}, "real"),
        ({"real": np.full((2, 5), np.nan), "volume": np.ones((2, 5))}, "real"),
        ({"real": np.ones((2, 5)), "volume": -np.ones((2, 5))}, "volume"),
        ({"real": np.ones((2, 5))}, "volume"),
    ],
)
def test_bad_blocks_name_the_input(inputs: dict[str, np.ndarray], parameter: str) -> None:
    with pytest.raises(core.FeatureInputError) as err:
        vectorized.compute_many("OBV", inputs)
    assert err.value.parameter == parameter


def test_bad_function_parameter_and_backend() -> None:
    real = {"real": np.ones((1, 40))}
    with pytest.raises(core.FeatureInputError) as err:
        vectorized.compute_many("NOPE", real)
    assert err.value.parameter == "function"
    with pytest.raises(core.FeatureInputError) as err:
        vectorized.compute_many("VWAP", {})
    assert err.value.parameter == "function"
    with pytest.raises(core.FeatureInputError) as err:
        vectorized.compute_many("SMA", real, timeperiod=1)
    assert err.value.parameter == "timeperiod"
    with pytest.raises(core.FeatureInputError) as err:
        vectorized.compute_many("SMA", real, backend="torch")
    assert err.value.parameter == "backend"
    with pytest.raises(core.FeatureInputError) as err:
        vectorized.warm_up(1, 10, ["VWAP"])
    assert err.value.parameter == "function"
