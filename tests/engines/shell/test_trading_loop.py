"""The paper-trading loop in the embedded platform, on two hours of the bundled SPY replay:
bars → features → strategy intents → risk approval → simulated fills → positions and PnL →
analytics, VaR and collateral — every stream reaching a WebSocket client through the hub, ids
chained from intent to fill, the ledger's identity holding on the last state."""

from __future__ import annotations

import asyncio
import collections
from decimal import Decimal
from typing import Any

import orjson
from websockets.asyncio.client import connect

from engines.collateral.config import load_agreements
from engines.collateral.core import variation_margin
from protocol.records import AccountState, Fill, Order, OrderSide, OrderStatus, decode
from tests.support import embedded_platform, replay_environ

WATCHED = (
    "features.SPY",
    "intents.ma_cross",
    "orders.paper",
    "fills.paper",
    "positions.paper",
    "pnl.paper",
    "risk.var.paper",
    "analytics.SPY",
    "analytics.paper",
    "collateral.paper",
)


async def test_the_default_strategies_trade_the_paper_account_end_to_end() -> None:
    environ = replay_environ("09:30", "11:30")
    seen_by_client: collections.Counter[str] = collections.Counter()
    async with embedded_platform(environ) as run:
        hub, engines, on_bus = run.hub, run.engines, run.on_bus
        marketdata: Any = engines["marketdata"].engine
        async with connect(f"ws://127.0.0.1:{hub.port}/ws", max_size=None) as ws:
            request = {"op": "subscribe", "id": 1, "channels": list(WATCHED)}
            await ws.send(orjson.dumps(request).decode())
            ack = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
            assert ack["type"] == "ack" and not ack.get("rejected"), ack
            while not (marketdata.progress.done and set(WATCHED) <= set(seen_by_client)):
                frame = orjson.loads(await asyncio.wait_for(ws.recv(), 30))
                for message in frame["messages"] if frame["type"] == "batch" else [frame]:
                    if message["type"] in ("update", "snapshot"):
                        seen_by_client[message["channel"]] += 1
        await asyncio.sleep(1.0)  # the last fills and states settle on the bus
        for running in engines.running:
            name = running.engine.name
            health = running.engine.health()
            assert health["errors"] == 0 and not health["bad_input"], (name, health)

    assert set(WATCHED) <= set(seen_by_client), seen_by_client
    # ids chain: every fill's order was approved by Risk and intended by a strategy
    intents = {
        decode(Order, e.payload).client_order_id: decode(Order, e.payload)
        for channel, envelopes in on_bus.items() if channel.startswith("intents.")
        for e in envelopes
    }  # fmt: skip
    orders = [decode(Order, e.payload) for e in on_bus["orders.paper"]]
    fills = [decode(Fill, e.payload) for e in on_bus["fills.paper"]]
    submitted = {o.client_order_id for o in orders if o.status is OrderStatus.SUBMITTED}
    assert fills and intents
    for fill in fills:
        parent = fill.client_order_id.split("-c", 1)[0]  # an algo child points at its parent
        assert parent in submitted and parent in intents, fill
        assert intents[parent].intent_id
    # the ledger: the last position equals the signed sum of the fills, and the identity holds
    net = sum((f.quantity if f.side is OrderSide.BUY else -f.quantity for f in fills), Decimal(0))
    book = on_bus["positions.paper"][-1].payload["positions"]
    held = sum((Decimal(p["quantity"]) for p in book if p["symbol"] == "SPY"), Decimal(0))
    assert held == net
    state = decode(AccountState, on_bus["pnl.paper"][-1].payload)
    assert state.fees == sum((f.fee for f in fills), Decimal(0))
    pnl = state.realized_pnl + state.unrealized_pnl - state.fees
    assert pnl == state.equity - state.starting_cash
    # collateral: the demo agreement's calls follow the account's PnL
    assert_calls_follow_the_pnl(on_bus)


def assert_calls_follow_the_pnl(on_bus: dict[str, list[Any]]) -> None:
    """Every exposure the ``paper`` agreement took is a published PnL's equity − starting cash;
    every call issued is the variation margin of the state it was issued in (the demo terms:
    MTA 100, rounding 10, auto-settled at each 5-minute valuation), and each settles in full."""
    [terms] = [t for t in load_agreements() if t.agreement.name == "paper"]
    published_pnl = {
        (a.event_ns, float(a.equity - a.starting_cash))
        for a in (decode(AccountState, e.payload) for e in on_bus["pnl.paper"])
    }
    states = [e.payload for e in on_bus["collateral.paper"]]
    exposures = {(s["exposure_ns"], s["exposure"]) for s in states if s["exposure_ns"]}
    assert exposures and exposures <= published_pnl
    transitions = [e.payload for e in on_bus["collateral.calls.paper"]]
    issued = [t for t in transitions if t["event"] == "issue"]
    assert issued, "the replay's PnL never moved past the demo's MTA: no call to see"
    for call in issued:
        state = next(s for s in states if (s["open_call"] or {}).get("call_id") == call["call_id"])
        due = variation_margin(terms.agreement, state["exposure"], state["held"])
        assert call["amount"] == due.call_amount != 0.0
        assert abs(call["amount"]) >= terms.agreement.minimum_transfer_amount
        assert call["amount"] % terms.agreement.rounding == 0.0
    settled = {t["call_id"]: t["amount"] for t in transitions if t["event"] == "settle"}
    for call in issued[:-1]:  # the last may still be open when the replay ends
        assert settled[call["call_id"]] == call["amount"]
