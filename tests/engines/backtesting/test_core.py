"""The vectorized core against outside references: the strategy's own indicators (TA-Lib
equal), vectorbt's ``Portfolio.from_signals`` on the MA crossover over SPY daily 1998–2021, and
PBO against a literal transcription of Bailey et al. (2017) §2 plus its limiting cases."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pandas as pd
import pytest

from engines.backtesting.core import (
    FillRule,
    MaCrossParams,
    ma_cross_path,
    ma_cross_sweep,
    pbo_cscv,
    print_path,
    sma_table,
    wilder_atr,
)
from engines.backtesting.history import load_bars
from engines.strategy.core import AverageTrueRange, SimpleMovingAverage

vbt = pytest.importorskip("vectorbt")


@pytest.fixture(scope="module")
def spy() -> object:
    return load_bars("SPY", "1d", 0, 2**62)


def test_sma_table_is_the_strategys_fsum_average_bit_for_bit(spy) -> None:  # type: ignore[no-untyped-def]
    table = sma_table(spy.close, [1, 3, 10, 30, 200])
    for row, w in enumerate((1, 3, 10, 30, 200)):
        sma = SimpleMovingAverage(w)
        expected = [sma.update(v) for v in spy.close.tolist()]
        got = table[row]
        assert [None if math.isnan(v) else v for v in got.tolist()] == expected


def test_wilder_atr_is_the_strategys(spy) -> None:  # type: ignore[no-untyped-def]
    atr = AverageTrueRange(14)
    expected = [atr.update(h, lo, c) for h, lo, c in
                zip(spy.high.tolist(), spy.low.tolist(), spy.close.tolist(), strict=True)]  # fmt: skip
    got = wilder_atr(spy.high, spy.low, spy.close, 14)
    assert [None if math.isnan(v) else v for v in got.tolist()] == expected


def test_print_path_visits_the_nearer_extreme_first() -> None:
    assert print_path(10.0, 12.0, 9.0, 11.0).tolist() == [10.0, 9.0, 12.0, 11.0]  # nearer the low
    assert print_path(10.0, 10.5, 8.0, 9.0).tolist() == [10.0, 10.5, 8.0, 9.0]
    both = print_path([10.0, 10.0], [12.0, 10.5], [9.0, 8.0], [11.0, 9.0])  # bar by bar
    assert both.tolist() == [[10.0, 9.0, 12.0, 11.0], [10.0, 10.5, 8.0, 9.0]]


@pytest.mark.parametrize("fill", [FillRule.NEXT_OPEN, FillRule.CLOSE])
def test_ma_cross_matches_vectorbt_from_signals_on_spy_daily(spy, fill: FillRule) -> None:  # type: ignore[no-untyped-def]
    assert str(spy.start_ns[0].astype("datetime64[ns]"))[:4] == "1998"
    close, open_ = pd.Series(spy.close), pd.Series(spy.open)
    fee_bps = 2.5
    for fast, slow in ((10, 30), (5, 50), (20, 100)):
        ours = ma_cross_path(spy, MaCrossParams(fast=fast, slow=slow, quantity=100,
                                                 atr_stop=1e12, fee_bps=fee_bps, fill=fill))  # fmt: skip
        f, s = vbt.MA.run(close, fast).ma, vbt.MA.run(close, slow).ma
        long, short = f > s, f < s
        if fill is FillRule.NEXT_OPEN:  # decided at t's close, traded at t+1's open
            long, short, price = (
                long.shift(1, fill_value=False),
                short.shift(1, fill_value=False),
                open_,
            )
        else:
            price = close
        pf = vbt.Portfolio.from_signals(close, entries=long, short_entries=short, price=price,
                                        size=100, size_type="amount", fees=fee_bps / 1e4,
                                        init_cash=1_000_000.0, freq="1D")  # fmt: skip
        orders = pf.orders.values
        ours_at = np.nonzero(ours.quantity)[0]
        signed = np.where(orders["side"] == 0, orders["size"], -orders["size"])
        assert len(orders) > 50
        assert np.array_equal(orders["idx"], ours_at)
        assert np.array_equal(signed, ours.quantity[ours_at])
        assert np.array_equal(orders["price"], ours.fill_price[ours_at])
        np.testing.assert_allclose(orders["fees"], ours.fee[ours_at], rtol=1e-12)
        final = float(pf.value().iloc[-1])
        assert abs(final / ours.equity[-1] - 1.0) < 1e-9
        np.testing.assert_allclose(pf.value().to_numpy(), ours.equity, rtol=1e-9)


def test_the_sweep_is_the_path_at_every_point(spy) -> None:  # type: ignore[no-untyped-def]
    base = MaCrossParams(quantity=100, fee_bps=1.0, slippage_bps=2.0)
    fast, slow = [5, 10, 20, 3], [30, 50, 60, 200]
    summary = ma_cross_sweep(spy, fast, slow, base, chunk=3)  # two chunks, one padded
    for i, (f, s) in enumerate(zip(fast, slow, strict=True)):
        path = ma_cross_path(spy, MaCrossParams(fast=f, slow=s, quantity=100, fee_bps=1.0,
                                                slippage_bps=2.0))  # fmt: skip
        assert summary.final_equity[i] == path.equity[-1]
        assert summary.fills[i] == np.count_nonzero(path.quantity)
        r = path.equity / np.concatenate(([base.cash], path.equity[:-1])) - 1.0
        np.testing.assert_allclose(summary.mean[i], r.mean(), rtol=1e-12)
        np.testing.assert_allclose(summary.std[i], r.std(ddof=1), rtol=1e-12)
    # slippage is paid against the order: a buy above the open, a sell below
    path = ma_cross_path(spy, MaCrossParams(fast=5, slow=30, slippage_bps=10.0))
    filled = np.nonzero(path.quantity)[0]
    ratio = path.fill_price[filled] / spy.open[filled]
    np.testing.assert_allclose(ratio, np.where(path.quantity[filled] > 0, 1.001, 0.999))


@pytest.mark.parametrize("fill", [FillRule.NEXT_OPEN, FillRule.CLOSE])
@pytest.mark.parametrize("allow_short", [True, False])
def test_the_sweep_kernel_is_the_path_bit_for_bit_over_a_grid(spy, fill, allow_short) -> None:  # type: ignore[no-untyped-def]
    """The sweep's scan is a leaner transcription of the path's step (no target, no masks):
    every point's fills and final equity are the path's exactly, its block sums those of the
    path's returns, with tight ATR stops that fire and padding in the last chunk."""
    base = MaCrossParams(quantity=100, atr_stop=2.0, fee_bps=1.5, slippage_bps=3.0,
                         fill=fill, allow_short=allow_short)  # fmt: skip
    fast = [2, 3, 5, 8, 13, 21, 2, 10, 40]
    slow = [5, 30, 9, 100, 50, 34, 250, 11, 41]
    blocks = 8
    summary = ma_cross_sweep(spy, fast, slow, base, blocks=blocks, chunk=4)
    block_of = np.minimum(np.arange(len(spy)) * blocks // len(spy), blocks - 1)
    for i, (f, s) in enumerate(zip(fast, slow, strict=True)):
        path = ma_cross_path(spy, dataclasses.replace(base, fast=f, slow=s))
        assert summary.final_equity[i] == path.equity[-1]
        assert summary.fills[i] == np.count_nonzero(path.quantity)
        r = path.equity / np.concatenate(([base.cash], path.equity[:-1])) - 1.0
        exact = [math.fsum(r[block_of == b]) for b in range(blocks)]
        np.testing.assert_allclose(summary.block_sum[i], exact, rtol=1e-13, atol=1e-18)
        squares = [math.fsum(r[block_of == b] ** 2) for b in range(blocks)]
        np.testing.assert_allclose(summary.block_sumsq[i], squares, rtol=1e-13, atol=1e-20)
        np.testing.assert_allclose(summary.mean[i], r.mean(), rtol=1e-12)
        np.testing.assert_allclose(summary.std[i], r.std(ddof=1), rtol=1e-12)
    # the stops fire: without them the same grid trades differently
    unstopped = ma_cross_sweep(spy, fast, slow, dataclasses.replace(base, atr_stop=1e12),
                               blocks=blocks)  # fmt: skip
    assert np.any(unstopped.final_equity != summary.final_equity)


def _pbo_literal(m: np.ndarray, s: int) -> float:
    """Bailey, Borwein, López de Prado & Zhu (2017) §2, step by step, on a T×N matrix."""
    t, n = m.shape
    blocks = np.array_split(np.arange(t), s)
    below = 0
    combos = list(itertools.combinations(range(s), s // 2))
    for combo in combos:
        inside = np.concatenate([blocks[i] for i in combo])
        outside = np.concatenate([blocks[i] for i in range(s) if i not in combo])
        sr_in = m[inside].mean(0) / m[inside].std(0, ddof=1)
        sr_out = m[outside].mean(0) / m[outside].std(0, ddof=1)
        star = int(np.argmax(sr_in))
        rank = 1 + sum(1 for v in sr_out if v < sr_out[star])
        omega = rank / (n + 1)
        below += math.log(omega / (1 - omega)) <= 0
    return below / len(combos)


def _blocks(m: np.ndarray, s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = m.shape[0]
    block_of = np.minimum(np.arange(t) * s // t, s - 1)
    bsum = np.stack([np.bincount(block_of, weights=c, minlength=s) for c in m.T])
    bsq = np.stack([np.bincount(block_of, weights=c * c, minlength=s) for c in m.T])
    return bsum, bsq, np.bincount(block_of, minlength=s)


def test_pbo_matches_the_papers_procedure_and_its_limits() -> None:
    rng = np.random.default_rng(7)
    noise = rng.normal(0.0, 0.01, (480, 20))
    pbo, logits = pbo_cscv(
        *_blocks(noise, 8),
    )
    assert len(logits) == math.comb(8, 4)
    assert pbo == pytest.approx(_pbo_literal(noise, 8), abs=1e-12)
    assert 0.2 < pbo < 0.8  # skill-less trials: the in-sample best is a coin flip out of sample
    skilled = noise.copy()
    skilled[:, 3] += 0.01  # one trial truly better in every block
    assert pbo_cscv(*_blocks(skilled, 8))[0] == 0.0
