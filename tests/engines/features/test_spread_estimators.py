"""Corwin–Schultz and Roll against the quoted spread of AIG and BAC (issue 9, Features).

The study itself lives in ``loadtest/spread_bench.py`` (its docstring gives the method); here:

* its measuring pieces are checked against outside references — the time-weighted mean against a
  brute-force integral (hand cases and hypothesis), the window estimates against the papers'
  formulas written independently in numpy (Corwin & Schultz 2012 eqs. 14 and 18; Roll 1984:
  2·sqrt(−cov(Δp_t, Δp_{t−1}))) on every 30-minute window of the real bars;
* the correlations are computed on the bundled ticks (7–11 Oct 2013, 09:30–16:00) and recorded
  (``record_property`` and the printed table), asserting only what the data clearly show:
  every correlation is finite, and Corwin–Schultz rises with the relative quoted spread where
  that is significant (pooled across the two names, and within AIG's 30-minute windows).
  Roll's correlations are weak and of mixed sign, so nothing about their sign is asserted.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from datetime import date

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from loadtest import spread_bench
from loadtest.spread_bench import SessionData

# --------------------------------------------------------------------------- time weighting


def _brute_time_weighted(event_ns: list[int], value: list[float], edges: list[int]) -> list[float]:
    """Integrate the step function one constant segment at a time, in plain Python."""
    out = []
    for lo, hi in itertools.pairwise(edges):
        cuts = sorted({lo, hi, *(t for t in event_ns if lo < t < hi)})
        num = den = 0.0
        for a, b in itertools.pairwise(cuts):
            in_force = [v for t, v in zip(event_ns, value, strict=True) if t <= a]
            level = in_force[-1] if in_force else math.nan
            if not math.isnan(level):
                num += level * (b - a)
                den += b - a
        out.append(num / den if den > 0 else math.nan)
    return out


def test_time_weighted_mean_hand_cases() -> None:
    # 1 on [0, 3), no quote on [3, 5), 4 on [5, 10): windows [0, 4) and [4, 10).
    got = spread_bench.time_weighted_mean(
        np.array([0, 3, 5]), np.array([1.0, math.nan, 4.0]), np.array([0, 4, 10])
    )
    np.testing.assert_allclose(got, [1.0, 4.0])
    # Nothing before t=1; 2 for 5 ns, 3 for 4 ns: 22/9. Two rows at t=6: the later holds.
    got = spread_bench.time_weighted_mean(
        np.array([1, 6, 6]), np.array([2.0, 9.0, 3.0]), np.array([0, 10])
    )
    np.testing.assert_allclose(got, [22.0 / 9.0])
    # A window with no quote at all is NaN; an event before the first edge is in force.
    got = spread_bench.time_weighted_mean(
        np.array([-5, 20]), np.array([math.nan, 7.0]), np.array([0, 10, 30])
    )
    assert math.isnan(got[0])
    np.testing.assert_allclose(got[1], 7.0)


@given(
    st.lists(
        st.tuples(
            st.integers(-5, 60), st.one_of(st.floats(0, 1, allow_nan=False), st.just(math.nan))
        ),
        min_size=1,
        max_size=25,
    ),
    st.lists(st.integers(0, 55), min_size=2, max_size=6, unique=True),
)
def test_time_weighted_mean_equals_brute_force(
    rows: list[tuple[int, float]], edge_points: list[int]
) -> None:
    rows.sort(key=lambda r: r[0])
    event_ns = [t for t, _ in rows]
    value = [v for _, v in rows]
    edges = sorted(edge_points)
    got = spread_bench.time_weighted_mean(
        np.array(event_ns, dtype=np.int64), np.array(value), np.array(edges, dtype=np.int64)
    )
    np.testing.assert_allclose(got, _brute_time_weighted(event_ns, value, edges), rtol=1e-12)


def test_quoted_spreads_leave_out_crossed_and_keep_locked() -> None:
    # 10.00/10.02 for 4 ns, locked 10.01/10.01 for 2 ns, crossed 10.02/10.01 for 4 ns.
    session = SessionData(
        symbol="X",
        day=date(2013, 10, 7),
        open_ns=0,
        close_ns=10,
        bar_start_ns=np.empty(0, dtype=np.int64),
        high=np.empty(0),
        low=np.empty(0),
        close=np.empty(0),
        quote_ns=np.array([0, 4, 6]),
        bid=np.array([10.00, 10.01, 10.02]),
        ask=np.array([10.02, 10.01, 10.01]),
    )
    dollars, relative = spread_bench.quoted_spreads(session, np.array([0, 10]))
    np.testing.assert_allclose(dollars, [(0.02 * 4 + 0.0 * 2) / 6], rtol=1e-12)
    np.testing.assert_allclose(relative, [(0.02 / 10.01 * 4) / 6], rtol=1e-12)


# --------------------------------------------------------------------------- the real data


@pytest.fixture(scope="module")
def sessions() -> list[SessionData]:
    return spread_bench.load_all()


def _corwin_schultz_paper(high: np.ndarray, low: np.ndarray) -> float:
    """Corwin & Schultz (2012), eqs. 14 and 18, over adjacent bar pairs, negatives set to 0."""
    k = 3.0 - 2.0 * math.sqrt(2.0)
    beta = np.log(high[:-1] / low[:-1]) ** 2 + np.log(high[1:] / low[1:]) ** 2
    gamma = np.log(np.maximum(high[:-1], high[1:]) / np.minimum(low[:-1], low[1:])) ** 2
    alpha = (np.sqrt(2.0 * beta) - np.sqrt(beta)) / k - np.sqrt(gamma / k)
    spread = 2.0 * (np.exp(alpha) - 1.0) / (1.0 + np.exp(alpha))
    return float(np.maximum(spread, 0.0).mean())


def _roll_paper(close: np.ndarray) -> float:
    """Roll (1984): 2·sqrt(−cov(Δp_t, Δp_{t−1})), sample covariance, 0 when not negative."""
    dp = np.diff(close)
    cov = float(np.cov(dp[1:], dp[:-1], ddof=1)[0, 1])
    return 2.0 * math.sqrt(-cov) if cov < 0 else 0.0


@pytest.mark.slow
def test_sessions_are_the_regular_session(sessions: list[SessionData]) -> None:
    assert [(s.symbol, s.day.isoformat()) for s in sessions] == [
        (sym, f"2013-10-{d:02d}") for sym in ("AIG", "BAC") for d in range(7, 12)
    ]
    for s in sessions:
        assert s.close_ns - s.open_ns == 390 * 60 * 10**9
        assert s.bar_start_ns[0] >= s.open_ns and s.bar_start_ns[-1] < s.close_ns
        assert 380 <= len(s.bar_start_ns) <= 390  # liquid names: (nearly) every minute trades
        assert np.all(s.high >= s.low) and np.all(s.low > 0)


@pytest.mark.slow
def test_window_estimates_equal_the_papers_formulas(sessions: list[SessionData]) -> None:
    checked = 0
    for s in sessions:
        for w in spread_bench.session_windows(s, spread_bench.WINDOW_MINUTES):
            rows = (s.bar_start_ns >= w.start_ns) & (
                s.bar_start_ns < w.start_ns + spread_bench.WINDOW_MINUTES * 60 * 10**9
            )
            assert w.bars == rows.sum() >= 25
            cs = _corwin_schultz_paper(s.high[rows], s.low[rows])
            roll = _roll_paper(s.close[rows])
            assert w.corwin_schultz == pytest.approx(cs, rel=1e-9, abs=1e-15)
            assert w.roll == pytest.approx(roll, rel=1e-9, abs=1e-15)
            checked += 1
    assert checked == 10 * 13


@pytest.mark.slow
def test_correlation_with_the_quoted_spread(
    sessions: list[SessionData], record_property: Callable[[str, object], None]
) -> None:
    result = spread_bench.study(sessions)
    print("\n" + spread_bench.format_table(result))
    for grouping, block in result.items():
        assert set(block) == {"AIG", "BAC", "pooled"}
        for sample, figures in block.items():
            for pair in ("corwin_schultz_vs_relative", "roll_vs_dollar"):
                c = figures[pair]
                record_property(f"{grouping}.{sample}.{pair}", c)
                assert (
                    c["n"]
                    == figures["windows"]
                    == (5 if grouping == "day" else 65) * (2 if sample == "pooled" else 1)
                )
                assert math.isfinite(c["pearson"]) and math.isfinite(c["spearman"])
                assert -1.0 <= c["pearson"] <= 1.0
    # Clearly positive (p < 0.001): across the two names, and within AIG's 30-minute windows.
    for grouping, sample in (("30min", "pooled"), ("30min", "AIG"), ("day", "pooled")):
        c = result[grouping][sample]["corwin_schultz_vs_relative"]
        t = c["pearson"] * math.sqrt((c["n"] - 2) / (1.0 - c["pearson"] ** 2))
        assert c["pearson"] > 0 and stats.t.sf(t, c["n"] - 2) < 1e-3, (grouping, sample, c)
