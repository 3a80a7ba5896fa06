"""Analytics benchmark: one streaming update of the full statistic set, and batch over 13 series.

    .venv/bin/python -m loadtest.analytics_bench [--repeat 5]

Figures (issue, Analytics): one ``StreamingStats.update`` (every statistic of ``Stats``, with a
benchmark: alpha, beta, information ratio, captures) p99 ≤ 20 µs, timed per call over a full
23-year daily history (the sorted list is at its longest at the end); batch ``compute_stats`` of
the 13 bundled daily series (1998–2021, total-return adjusted) against SPY ≤ 50 ms (best of
``--repeat``). Prints a table and writes ``loadtest/results/analytics_bench.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from engines.analytics import core
from engines.marketdata import daily

RESULTS = Path(__file__).parent / "results"


def _series() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for ticker in daily.daily_tickers():
        bars = daily.read_daily_bars(ticker, "total")
        out[ticker] = (bars.date[1:], bars.close[1:] / bars.close[:-1] - 1.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed batch runs (best kept)")
    args = parser.parse_args()
    series = _series()
    spy_dates, spy = series["SPY"]
    aligned = []
    for dates, r in series.values():
        _, i, j = np.intersect1d(dates, spy_dates, return_indices=True)
        aligned.append((r[i], spy[j]))
    n_returns = sum(r.size for r, _ in aligned)

    # Streaming: every update of the longest series, timed one by one.
    r, b = aligned[list(series).index("SPY")]
    laps = []
    for _ in range(3):
        stream = core.StreamingStats(benchmark=True)
        rl, bl = r.tolist(), b.tolist()
        clock = time.perf_counter_ns
        for x, y in zip(rl, bl, strict=True):
            start = clock()
            stream.update(x, y)
            laps.append(clock() - start)
    lap = np.array(laps) / 1000.0

    # Batch: the full set over 13 series.
    best = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        for ret, bench in aligned:
            core.compute_stats(ret, bench)
        best = min(best, time.perf_counter() - t0)

    result = {
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "streaming_update_us": {
            "updates": int(lap.size),
            "p50": float(np.percentile(lap, 50)),
            "p99": float(np.percentile(lap, 99)),
            "max": float(lap.max()),
            "target_p99": 20.0,
        },
        "batch_13_series": {
            "series": len(aligned),
            "returns": int(n_returns),
            "best_ms": best * 1000.0,
            "target_ms": 50.0,
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "analytics_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    p50, p99 = float(np.percentile(lap, 50)), float(np.percentile(lap, 99))
    print(f"{'figure':<44}{'value':>12}{'target':>10}")
    print(f"{'streaming update, full set, p50 (µs)':<44}{p50:>12.2f}{'':>10}")
    print(f"{'streaming update, full set, p99 (µs)':<44}{p99:>12.2f}{20.0:>10.1f}")
    print(f"{'batch, 13 series × ~23 y vs SPY (ms)':<44}{best * 1000.0:>12.2f}{50.0:>10.1f}")


if __name__ == "__main__":
    main()
