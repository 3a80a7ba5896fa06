"""Walk-forward against a literal transcription: each window's in-sample choice is the argmax of
the Sharpe ratios of every grid point run on its own (``ma_cross_path``, itself equal to
vectorbt's ``from_signals``: ``test_core``), the out-of-sample returns are that point's run over
in-sample + out-of-sample bars, and each window's Deflated Sharpe is Bailey & López de Prado's
(2014) eq. (5) written out with scipy's normal distribution."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats

from engines.backtesting.core import BarArrays, MaCrossParams, ma_cross_path, walk_forward
from engines.backtesting.history import load_bars

FAST, SLOW = [3, 5, 10, 5, 10, 20], [20, 20, 20, 50, 50, 50]
BASE = MaCrossParams(quantity=100, fee_bps=1.0, slippage_bps=1.0)


@pytest.fixture(scope="module")
def spy() -> BarArrays:
    return load_bars("SPY", "1d", 1_104_537_600 * 10**9, 1_325_376_000 * 10**9)  # 2005–2011


def _returns(bars: BarArrays, fast: int, slow: int) -> np.ndarray:
    params = dataclasses.replace(BASE, fast=fast, slow=slow)
    equity = ma_cross_path(bars, params).equity
    return equity / np.concatenate(([params.cash], equity[:-1])) - 1.0


def _deflated(sr: float, r: np.ndarray, trial_sharpes: np.ndarray) -> float:
    """Bailey & López de Prado (2014) eq. (5), with their E[max] of N normal trials."""
    n = trial_sharpes.size
    gamma = 0.5772156649015329
    sd = math.sqrt(np.var(trial_sharpes, ddof=1))
    sr0 = sd * (
        (1 - gamma) * stats.norm.ppf(1 - 1 / n) + gamma * stats.norm.ppf(1 - 1 / (n * math.e))
    )
    skew = stats.skew(r)
    kurt = stats.kurtosis(r, fisher=False)
    z = (sr - sr0) * math.sqrt(r.size - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2)
    return float(stats.norm.cdf(z))


def test_walk_forward_is_the_literal_procedure(spy: BarArrays) -> None:
    train, test, step = 500, 120, 250
    wf = walk_forward(spy, FAST, SLOW, BASE, train=train, test=test, step=step, blocks=8)
    starts = list(range(0, len(spy) - train - test + 1, step))
    assert [w.train_from for w in wf.windows] == starts and len(starts) >= 4
    kept: list[np.ndarray] = []
    span = np.arange(len(spy))
    for w, start in zip(wf.windows, starts, strict=True):
        inside = spy.select((span >= start) & (span < start + train))
        runs = [_returns(inside, f, s) for f, s in zip(FAST, SLOW, strict=True)]
        sharpes = np.array([r.mean() / r.std(ddof=1) for r in runs])
        assert w.best == int(np.argmax(sharpes))
        assert w.in_sample_sharpe == pytest.approx(sharpes[w.best], rel=1e-12)
        both = spy.select((span >= start) & (span < start + train + test))
        r = _returns(both, FAST[w.best], SLOW[w.best])
        np.testing.assert_array_equal(r[:train], runs[w.best])  # the run never looks ahead
        out = r[train:]
        kept.append(out)
        assert w.out_of_sample_sharpe == pytest.approx(out.mean() / out.std(ddof=1), rel=1e-12)
        assert w.deflated_sharpe == pytest.approx(
            _deflated(sharpes[w.best], runs[w.best], sharpes), rel=1e-9
        )
        assert 0.0 <= w.pbo <= 1.0
        assert (w.test_from, w.test_to) == (start + train, start + train + test)
    np.testing.assert_array_equal(wf.returns, np.concatenate(kept))
    np.testing.assert_array_equal(
        wf.bar, np.concatenate([np.arange(s + train, s + train + test) for s in starts])
    )


def test_walk_forward_refuses_windows_that_do_not_fit(spy: BarArrays) -> None:
    with pytest.raises(ValueError, match="train \\+ test"):
        walk_forward(spy, FAST, SLOW, BASE, train=len(spy), test=10)
    with pytest.raises(ValueError, match="train >= 16"):
        walk_forward(spy, FAST, SLOW, BASE, train=10, test=10)
