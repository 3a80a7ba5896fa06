"""Pre-trade check latency: ``engines.risk.pretrade.check`` per order, and the engine's whole path.

    .venv/bin/python -m loadtest.pretrade_bench [--orders 50000] [--positions 12]

Book: the paper account's default limits (every check on: grid, state, rate, collar, min
notional, VPIN, quantity, notional, position, gross and net exposure), ``--positions`` held
instruments of the bundled table (long and short) each with a pending order, last trades on
all. Orders: a deterministic mix of market, limit, stop and stop-limit, buys and sells, on the
held symbols, 1 ms of event time apart (under the rate limit); about one in six is denied (a
collar breach, an off-tick price, an oversize order), so both paths are timed. Timed, per
order, with ``time.perf_counter_ns``:

* ``check``: the pure check alone;
* ``check + commit``: the check, then ``record_submitted`` and a fill releasing the pending
  order (what the engine does around an approval);
* ``engine``: ``RiskEngine.dispatch`` of an ``intents.*`` envelope (decode the payload into an
  ``Order``, check, publish ``submitted``/``denied`` on an in-process ``MemoryBus``).

Target (issue 11): the check adds ≤ 50 µs p99 per order. Prints a table and writes
``loadtest/results/pretrade_bench.json`` with the CPU it ran on. One core, ~10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from engines.risk.pretrade import AccountBook, Approved, MarketState, check
from engines.risk.service import RiskConfig, RiskEngine
from engines.shell.instruments import load_instruments
from protocol.records import Order, OrderSide, OrderStatus, OrderType, encode
from realtime.bus import Envelope, MemoryBus
from realtime.clock import ManualClock

RESULTS = Path(__file__).parent / "results"
TARGET_P99_US = 50.0
START_NS = 1381152600_000_000_000


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def market(symbols: list[str]) -> dict[str, Decimal]:
    return {s: Decimal(50 + 10 * i) for i, s in enumerate(symbols)}


def orders(symbols: list[str], prices: dict[str, Decimal], n: int, seed: int) -> list[Order]:
    rng = np.random.default_rng(seed)
    kinds = [OrderType.MARKET, OrderType.LIMIT, OrderType.STOP, OrderType.STOP_LIMIT]
    out = []
    for i in range(n):
        symbol = symbols[int(rng.integers(len(symbols)))]
        last = prices[symbol]
        kind = kinds[int(rng.integers(4))]
        side = OrderSide.BUY if rng.random() < 0.5 else OrderSide.SELL
        quantity = Decimal(int(rng.integers(1, 200)))
        offset = Decimal(int(rng.integers(-60, 61))) / 100  # within the 5 % collar
        roll = rng.random()
        if roll < 0.06:
            offset = last / 10  # 10 %: collar
        elif roll < 0.12:
            offset += Decimal("0.005")  # off tick
        elif roll < 0.17:
            quantity = Decimal(20_000)  # over max quantity
        price = last + offset if kind in (OrderType.LIMIT, OrderType.STOP_LIMIT) else None
        stop = last - Decimal(1) if kind in (OrderType.STOP, OrderType.STOP_LIMIT) else None
        out.append(
            Order(
                client_order_id=f"b{i}", account="paper", strategy="bench", symbol=symbol,
                side=side, type=kind, quantity=quantity, status=OrderStatus.INITIALIZED,
                event_ns=START_NS + i * 1_000_000, price=price, stop_price=stop,
            )
        )  # fmt: skip
    return out


def fresh_book(symbols: list[str], prices: dict[str, Decimal]) -> AccountBook:
    limits = RiskConfig(max_orders_per_second=2_000, order_burst=100).limits()
    book = AccountBook("paper", limits, load_instruments(), MarketState(last_price=dict(prices)))
    book.set_positions(
        {s: Decimal(100 if i % 2 else -80) for i, s in enumerate(symbols)}, dict(prices)
    )
    for i, s in enumerate(symbols):
        side = OrderSide.BUY if i % 3 else OrderSide.SELL
        book.record_submitted(f"p{i}", s, side, Decimal(10), prices[s], START_NS - 10**9)
    return book


def summary(ns: np.ndarray) -> dict[str, float]:
    us = ns / 1e3
    return {
        "p50_us": float(np.percentile(us, 50)),
        "p90_us": float(np.percentile(us, 90)),
        "p99_us": float(np.percentile(us, 99)),
        "max_us": float(us.max()),
        "mean_us": float(us.mean()),
    }


def time_check(batch: list[Order], book: AccountBook, commit: bool) -> tuple[np.ndarray, int]:
    out = np.empty(len(batch), dtype=np.int64)
    approved = 0
    clock = time.perf_counter_ns
    for i, order in enumerate(batch):
        started = clock()
        decision = check(order, book)
        if commit and isinstance(decision, Approved):
            book.record_submitted(
                order.client_order_id, order.symbol, order.side, decision.quantity,
                decision.price, order.event_ns,
            )  # fmt: skip
            book.on_order(
                msgspec.structs.replace(
                    order, status=OrderStatus.FILLED, filled_quantity=decision.quantity
                )
            )
        out[i] = clock() - started
        approved += isinstance(decision, Approved)
    return out, approved


async def time_engine(batch: list[Order], prices: dict[str, Decimal]) -> np.ndarray:
    clock = ManualClock(START_NS)
    config = RiskConfig(max_orders_per_second=2_000, order_burst=100)
    engine = RiskEngine(config, bus=MemoryBus(clock=clock), clock=clock)
    engine.market.last_price.update(prices)
    handling = engine.inputs()["intents.*"]
    sink = engine.bus.subscribe(">")
    out = np.empty(len(batch), dtype=np.int64)
    timer = time.perf_counter_ns
    for i, order in enumerate(batch):
        envelope = Envelope(
            "intents.bench", i + 1, "bench", order.event_ns, order.event_ns, encode(order)
        )
        started = timer()
        await engine.dispatch(envelope, "intents.*", handling)
        out[i] = timer() - started
        if sink.pending > 10_000:
            await sink.next_batch(1 << 16)
    sink.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=50_000, help="orders per timed run")
    parser.add_argument("--positions", type=int, default=12, help="held instruments (≤ 13)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    symbols = [s for s in load_instruments() if s != "BTCUSDT"][: args.positions]
    prices = market(symbols)
    batch = orders(symbols, prices, args.orders, args.seed)
    time_check(batch[:2_000], fresh_book(symbols, prices), commit=False)  # warm caches
    check_ns, approved = time_check(batch, fresh_book(symbols, prices), commit=False)
    commit_ns, _ = time_check(batch, fresh_book(symbols, prices), commit=True)
    engine_ns = asyncio.run(time_engine(batch, prices))
    rows = {
        "check": summary(check_ns),
        "check + commit": summary(commit_ns),
        "engine (decode, check, publish)": summary(engine_ns),
    }
    print(f"{args.orders} orders, {len(symbols)} held instruments with pending orders, "
          f"{approved / len(batch):.0%} approved by the bare check")  # fmt: skip
    print(f"{'path':34s}{'p50 µs':>9s}{'p90 µs':>9s}{'p99 µs':>9s}{'max µs':>9s}{'target':>8s}")
    for name, s in rows.items():
        target = f"{TARGET_P99_US:.0f}" if name == "check" else ""
        print(
            f"{name:34s}{s['p50_us']:9.2f}{s['p90_us']:9.2f}{s['p99_us']:9.2f}"
            f"{s['max_us']:9.1f}{target:>8s}"
        )
    result: dict[str, Any] = {
        "orders": args.orders,
        "held_instruments": len(symbols),
        "approved_share": approved / len(batch),
        "latency": rows,
        "target_p99_us": TARGET_P99_US,
        "passes": rows["check"]["p99_us"] <= TARGET_P99_US,
        "machine": {
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)),
            "load_average_1m": os.getloadavg()[0],
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    m = result["machine"]
    print(
        f"cpu: {m['cpu']} ({m['affinity']} usable cores, load average {m['load_average_1m']:.1f})"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pretrade_bench.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
