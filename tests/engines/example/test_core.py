"""Session VWAP equals Σpq/Σq of the session's trades (numpy, the closed form) at every step."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from engines.example.core import DAY_NS, SessionVwap

HOUR = 3_600_000_000_000


def test_hand_case_and_reset_at_the_session_cut() -> None:
    vwap = SessionVwap(session_offset_ns=13 * HOUR)  # sessions cut at 13:00 UTC
    assert vwap.add(14 * HOUR, 100.0, 10.0).vwap == 100.0
    v = vwap.add(15 * HOUR, 103.0, 30.0)  # (1000 + 3090) / 40
    assert (v.vwap, v.volume, v.trades) == (102.25, 40.0, 2)
    after = vwap.add(DAY_NS + 13 * HOUR, 90.0, 1.0)  # the next session starts afresh
    assert (after.vwap, after.trades, after.session) == (90.0, 1, v.session + 1)
    before_cut = vwap.add(DAY_NS + 13 * HOUR + 1, 91.0, 1.0)
    assert before_cut.vwap == 90.5


@given(
    st.lists(
        st.tuples(
            st.integers(0, 3 * DAY_NS),
            st.floats(0.01, 1e5, allow_nan=False),
            st.floats(1e-3, 1e6, allow_nan=False),
        ),
        min_size=1,
        max_size=60,
    )
)
def test_every_step_equals_numpy_on_the_session_prefix(
    trades: list[tuple[int, float, float]],
) -> None:
    trades.sort(key=lambda t: t[0])
    vwap = SessionVwap()
    t = np.array([x[0] for x in trades])
    p = np.array([x[1] for x in trades])
    q = np.array([x[2] for x in trades])
    for i, (event_ns, price, size) in enumerate(trades):
        value = vwap.add(event_ns, price, size)
        same = (t[: i + 1] // DAY_NS) == event_ns // DAY_NS
        expected = np.dot(p[: i + 1][same], q[: i + 1][same]) / q[: i + 1][same].sum()
        assert np.isclose(value.vwap, expected, rtol=1e-12)
        assert value.trades == int(same.sum())
