"""Backtesting throughput (issue 12 figures), on this machine's CPU.

1. Event-driven: minute bars of 5 days × 3 symbols (SPY, AIG, BAC; regular session) through the
   live Strategy + Risk + Portfolio engines under the deterministic driver (MA crossover 10/30).
2. Vectorized: the MA-crossover grid of 100 × 100 windows (fast 2..101, slow 102..498 step 4)
   over SPY daily 1998–2021, next-open fills, 1 bp fees: compile once, then the timed sweep.
3. vectorbt (``Portfolio.from_signals``, one column per combination) on the first 2 000
   combinations of that grid (the full grid takes it over a minute here), when installed, and
   the ratio of the per-combination times.

Run: ``.venv/bin/python loadtest/backtest_bench.py`` (about a minute).
"""

from __future__ import annotations

import time

import numpy as np

from engines.backtesting.core import MaCrossParams, ma_cross_sweep
from engines.backtesting.history import load_bars
from engines.backtesting.replay import EventRun, run_event

MA = "engines.strategy.strategies:MovingAverageCross"


def event_driven() -> None:
    bars = [load_bars(s, "1m", 0, 2**62) for s in ("SPY", "AIG", "BAC")]
    n = sum(len(b) for b in bars)
    run = EventRun(strategy_path=MA, params={"fast": 10, "slow": 30}, fee_bps=1.0)
    started = time.perf_counter()
    result = run_event(run, bars)
    took = time.perf_counter() - started
    print(f"event-driven: {n} minute bars (5 days x 3 symbols, {4 * n + n} messages) in "
          f"{took:.2f} s ({n / took:,.0f} bars/s), {len(result.fills)} fills")  # fmt: skip


def vectorized() -> tuple[float, np.ndarray, np.ndarray]:
    spy = load_bars("SPY", "1d", 0, 2**62)
    fast, slow = np.meshgrid(np.arange(2, 102), np.arange(102, 502, 4), indexing="ij")
    f, s = fast.ravel(), slow.ravel()
    base = MaCrossParams(quantity=100, atr_stop=1e12, fee_bps=1.0)
    ma_cross_sweep(spy, f[:2048], s[:2048], base)  # compile (same padded chunk shape)
    started = time.perf_counter()
    summary = ma_cross_sweep(spy, f, s, base)
    took = time.perf_counter() - started
    print(f"vectorized: {f.size} combinations x {len(spy)} SPY daily bars in {took:.2f} s "
          f"({f.size / took:,.0f} combinations/s); best final equity "
          f"{summary.final_equity.max():,.2f}")  # fmt: skip
    return took, f, s


def vectorbt_grid(f: np.ndarray, s: np.ndarray) -> float | None:
    try:
        import pandas as pd
        import vectorbt as vbt
    except ImportError:
        print("vectorbt: not installed")
        return None
    spy = load_bars("SPY", "1d", 0, 2**62)
    close = pd.Series(spy.close)
    started = time.perf_counter()
    windows = np.unique(np.concatenate((f, s)))
    ma = vbt.MA.run(close, windows.tolist()).ma.to_numpy()
    col = {w: i for i, w in enumerate(windows.tolist())}
    fast_ma = ma[:, [col[w] for w in f.tolist()]]
    slow_ma = ma[:, [col[w] for w in s.tolist()]]
    longs = pd.DataFrame(fast_ma > slow_ma).shift(1, fill_value=False)
    shorts = pd.DataFrame(fast_ma < slow_ma).shift(1, fill_value=False)
    price = pd.DataFrame(np.repeat(spy.open[:, None], f.size, axis=1))
    pf = vbt.Portfolio.from_signals(
        pd.DataFrame(np.repeat(spy.close[:, None], f.size, axis=1)), entries=longs,
        short_entries=shorts, price=price, size=100, size_type="amount", fees=1e-4,
        init_cash=1_000_000.0, freq="1D",
    )  # fmt: skip
    pf.final_value()
    took = time.perf_counter() - started
    print(f"vectorbt: the same {f.size} combinations in {took:.2f} s")
    return took


if __name__ == "__main__":
    event_driven()
    ours, f, s = vectorized()
    share = 2_000
    theirs = vectorbt_grid(f[:share], s[:share])
    if theirs is not None:
        ratio = (theirs / share) / (ours / f.size)
        print(f"ratio vectorbt / ours per combination: {ratio:.1f}x")
