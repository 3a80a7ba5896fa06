from __future__ import annotations

import numpy as np
import pytest

from realtime.replay import Pacer


def test_pacer_scales_recorded_time() -> None:
    pacer = Pacer(speed=10.0, first_event_ns=1_000, wall_start_ns=5_000)
    due = pacer.due_ns(np.array([1_000, 2_000, 11_000], dtype=np.int64))
    assert due.tolist() == [5_000, 5_100, 6_000]
    assert Pacer(0, 1_000, 7).due_ns(np.array([1_000, 9_999], dtype=np.int64)).tolist() == [7, 7]
    with pytest.raises(ValueError):
        Pacer(-1, 0, 0)
