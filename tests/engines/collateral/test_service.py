"""The Collateral engine on the bus: ``pnl.*`` in → margin calls and agreement state out.

Amounts are worked by hand from the ISDA CSA (Paragraph 3 and 13: threshold, independent amount,
MTA, rounding up on delivery and down on return); the valuation grid, the call lifecycle, bad
input counted, state restored from real PostgreSQL after a restart, bad agreement files refused
naming the field.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from engines.collateral.config import CollateralConfig, load_agreements
from engines.collateral.core import CallEvent, CallState
from engines.collateral.service import CollateralEngine
from engines.shell import ConflictError, NotFoundError, load_config
from engines.shell.driver import DeterministicDriver
from protocol.records import AccountState, encode
from realtime.bus import MemoryBus, Subscription
from realtime.clock import ManualClock
from tests.support import TEST_DSN, migrated_schema, until

T0 = 1_381_152_600_000_000_000  # 2013-10-07 13:30 UTC, on the 5-minute grid
S = 1_000_000_000
START = Decimal("1000000")

AGREEMENTS: dict[str, Any] = {
    "agreements": [
        {
            "name": "bank-a",
            "counterparty": "BANK_A",
            "account": "paper",
            "currency": "USD",
            "threshold": 1000.0,
            "minimum_transfer_amount": 500.0,
            "rounding": 100.0,
            "call_frequency": "5m",
            "eligible": [{"asset_class": "cash.USD", "haircut": 0.0}],
        },
        {
            "name": "bank-b",
            "counterparty": "BANK_B",
            "account": "paper",
            "currency": "USD",
            "independent_amount": 250.0,
            "call_frequency": "0s",
        },
        {"name": "posted", "counterparty": "BANK_C", "currency": "USD", "held": 700.0},
    ]
}


def write_agreements(tmp: Path, content: Any) -> str:
    path = tmp / "agreements.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return str(path)


def pnl(event_ns: int, equity: str, *, account: str = "paper", ccy: str = "USD") -> dict[str, Any]:
    up = Decimal(equity) - START
    return encode(
        AccountState(
            account=account,
            currency=ccy,
            starting_cash=START,
            cash=START,
            equity=Decimal(equity),
            realized_pnl=Decimal(0),
            unrealized_pnl=up,
            fees=Decimal(0),
            gross_exposure=Decimal(0),
            net_exposure=Decimal(0),
            event_ns=event_ns,
        )
    )


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[CollateralEngine]:
    clock = ManualClock(T0)
    config = CollateralConfig(agreements=write_agreements(tmp_path, AGREEMENTS))
    running = CollateralEngine(config, bus=MemoryBus(clock=clock), clock=clock)
    await running.start()
    yield running
    await running.stop()


async def drain(sub: Subscription, n: int) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    while len(got) < n:
        got += [e.payload for e in await sub.next_batch(100)]
    assert len(got) == n and sub.pending == 0
    return got


async def test_pnl_drives_valuations_calls_and_the_lifecycle(engine: CollateralEngine) -> None:
    calls_a = engine.bus.subscribe("collateral.calls.bank-a")
    calls_b = engine.bus.subscribe("collateral.calls.bank-b")
    states_a = engine.bus.subscribe("collateral.bank-a")
    assert list(engine.declared_channels()) == [
        "collateral.bank-a", "collateral.calls.bank-a",
        "collateral.bank-b", "collateral.calls.bank-b",
        "collateral.posted", "collateral.calls.posted",
    ]  # fmt: skip

    # T0, MTM +2,340: bank-a CSA = 2,340 − 1,000 = 1,340 ≥ MTA 500 → 1,400 rounded up, called at
    # the first valuation; bank-b CSA = 2,340 + IA 250 = 2,590 (no MTA, no rounding).
    await engine.bus.publish("pnl.paper", pnl(T0, "1002340"), event_ns=T0)
    issued_a, issued_b = (await drain(calls_a, 1))[0], (await drain(calls_b, 1))[0]
    assert (issued_a["event"], issued_a["to_state"], issued_a["amount"]) == (
        "issue",
        "issued",
        1400.0,
    )
    assert issued_a["call_id"] == f"bank-a-{T0}" and issued_a["seq"] == 1
    assert issued_b["amount"] == 2590.0
    state = (await drain(states_a, 1))[0]
    assert state["exposure"] == 2340.0 and state["credit_support_amount"] == 1340.0
    assert state["due"] == 1400.0 and state["open_call"]["call_id"] == f"bank-a-{T0}"
    assert state["next_valuation_ns"] == T0 + 300 * S

    # +60 s, MTM +5,000: no valuation for bank-a (5-minute grid), state revalued; bank-b values
    # on every update but its call is still open, so no second call.
    await engine.bus.publish("pnl.paper", pnl(T0 + 60 * S, "1005000"), event_ns=T0)
    state = (await drain(states_a, 1))[0]
    assert (state["due"], state["calls_issued"]) == (4000.0, 1)
    assert state["open_call"]["amount"] == 1400.0

    # the counterparty agrees and pays 1,400: held = 1,400, due = 4,000 − 1,400 = 2,600
    engine.clock.set(T0 + 90 * S)  # type: ignore[attr-defined]
    await engine.call_event(f"bank-a-{T0}", CallEvent.AGREE)
    settled = await engine.call_event(f"bank-a-{T0}", CallEvent.SETTLE)
    assert settled.call.state is CallState.SETTLED and settled.call.settled_amount == 1400.0
    assert [p["event"] for p in await drain(calls_a, 2)] == ["agree", "settle"]
    state = (await drain(states_a, 2))[-1]
    assert (state["held"], state["due"], state["open_call"]) == (1400.0, 2600.0, None)

    # at the 5-minute valuation the 2,600 is called
    await engine.bus.publish("pnl.paper", pnl(T0 + 300 * S, "1005000"), event_ns=T0)
    second = (await drain(calls_a, 1))[0]
    assert (second["call_id"], second["amount"]) == (f"bank-a-{T0 + 300 * S}", 2600.0)
    engine.clock.set(T0 + 330 * S)  # type: ignore[attr-defined]
    await engine.call_event(second["call_id"], CallEvent.AGREE)
    await engine.call_event(second["call_id"], CallEvent.SETTLE)
    await drain(calls_a, 2)

    # the PnL turns to −3,000 with 4,000 held: CSA = −2,000, −6,000 to move: 4,000 returned
    # (rounded down), 2,000 delivered by us (rounded up)
    await engine.bus.publish("pnl.paper", pnl(T0 + 600 * S, "997000"), event_ns=T0)
    third = (await drain(calls_a, 1))[0]
    assert third["amount"] == -6000.0
    assert engine.open_calls_on_us()["bank-a"] == 6000.0
    await until(lambda: engine.states["bank-a"].exposure == -3000.0)

    # listed, by state and agreement
    issued = engine.list_calls(state=CallState.ISSUED, agreement="bank-a")
    assert [c.call_id for c in issued] == [third["call_id"]]
    assert len(engine.list_calls(state=CallState.SETTLED)) == 2
    # the store holds every transition and state, in order
    page = await engine.call_store.query("bank-a", 0, 2**62, 100)
    assert [(r.call_id[-12:], r.event) for r in page.items] == [
        (f"{T0}"[-12:], "issue"), (f"{T0}"[-12:], "agree"), (f"{T0}"[-12:], "settle"),
        (f"{T0 + 300 * S}"[-12:], "issue"), (f"{T0 + 300 * S}"[-12:], "agree"),
        (f"{T0 + 300 * S}"[-12:], "settle"), (f"{T0 + 600 * S}"[-12:], "issue"),
    ]  # fmt: skip
    assert await engine.state_store.latest("bank-a") == engine.states["bank-a"]


async def test_bad_pnl_input_is_counted_never_fatal(engine: CollateralEngine) -> None:
    out = engine.bus.subscribe("collateral.bank-a")
    await engine.bus.publish("pnl.paper", pnl(T0 + 10 * S, "1000100"), event_ns=T0)
    await engine.bus.publish("pnl.paper", {"account": "paper"}, event_ns=T0)  # not a state
    await engine.bus.publish("pnl.paper", {"s": "SPY", "p": 1.0}, event_ns=T0)
    await engine.bus.publish("pnl.paper", pnl(T0 + 5 * S, "1000200"), event_ns=T0)  # late
    await engine.bus.publish("pnl.paper", pnl(T0 + 20 * S, "1000300", ccy="EUR"), event_ns=T0)
    await engine.bus.publish("pnl.other", pnl(T0 + 30 * S, "1", account="other"), event_ns=T0)
    await engine.bus.publish("pnl.paper", pnl(T0 + 40 * S, "1000400"), event_ns=T0)
    states = await drain(out, 2)  # the first and the last, nothing in between
    assert [s["exposure"] for s in states] == [100.0, 400.0]

    def bad() -> dict[str, int]:
        return dict(engine.health()["bad_input"].get("pnl.*", {}))  # type: ignore[attr-defined]

    # late and currency_mismatch once per agreement that follows the account (bank-a, bank-b)
    await until(lambda: sum(bad().values()) == 6)
    assert bad() == {"missing_field": 2, "late": 2, "currency_mismatch": 2}
    assert engine.health()["errors"] == 0 and engine.status() == "ok"


async def test_posted_exposure_and_its_errors(engine: CollateralEngine) -> None:
    # "posted" follows no account: held 700 at start; exposure 500 → CSA 500, 200 returned
    state = await engine.post_exposure("posted", 500.0, T0)
    assert (state.held, state.required, state.due) == (700.0, -200.0, -200.0)
    assert state.exposure_source == "posted" and state.open_call is not None
    with pytest.raises(ConflictError) as late:
        await engine.post_exposure("posted", 600.0, T0 - 1)
    assert late.value.parameter == "event_ns"
    with pytest.raises(NotFoundError):
        await engine.post_exposure("nope", 1.0)
    with pytest.raises(NotFoundError):
        await engine.call_event("nope-1", CallEvent.AGREE)
    call_id = state.open_call.call_id
    with pytest.raises(ConflictError) as bad:
        await engine.call_event(call_id, CallEvent.SETTLE)
    assert bad.value.parameter == "event" and bad.value.code == "bad_transition"
    assert engine.states["posted"].open_call == state.open_call  # nothing changed


async def test_auto_settle_makes_calls_follow_the_pnl_on_the_bundled_demo() -> None:
    """The bundled demo: agreement ``paper`` on the paper account, MTA 100, rounding 10, a
    5-minute grid and a simulated counterparty that settles each call at the next valuation."""
    clock = ManualClock(T0)
    engine = CollateralEngine(CollateralConfig(), bus=MemoryBus(clock=clock), clock=clock)
    await engine.start()
    calls = engine.bus.subscribe("collateral.calls.paper")
    everything = engine.bus.subscribe(">")
    # PnL every minute for 16 minutes: +1,234 +1,800 ... (valuations at T0, +5, +10, +15 min)
    path = [1234, 1800, 2500, 2100, 900, 3333, 3000, 2000, 1500, 1000, -2450, -2600, -2000, 0, 0,
            -430]  # fmt: skip
    for minute, mtm in enumerate(path):
        at = T0 + minute * 60 * S
        await engine.bus.publish("pnl.paper", pnl(at, str(START + mtm)), event_ns=at)
    events = [(p["event"], p["amount"]) for p in await drain(calls, 10)]
    await engine.stop()
    # T0: 1,234 → call 1,240 (rounded up to 10). +5 min (3,333): settle 1,240, call 3,333 −
    # 1,240 = 2,093 → 2,100. +10 (−2,450): settle 2,100 (held 3,340), −5,790 to move: return
    # 3,340 (a multiple of 10 already) and deliver 2,450: −5,790. +15 (−430): settle −5,790
    # (held −2,450), we get back 2,450 − 430 = 2,020 of what we posted, rounded down: 2,020.
    assert events == [
        ("issue", 1240.0),
        ("agree", 1240.0), ("settle", 1240.0), ("issue", 2100.0),
        ("agree", 2100.0), ("settle", 2100.0), ("issue", -5790.0),
        ("agree", -5790.0), ("settle", -5790.0), ("issue", 2020.0),
    ]  # fmt: skip
    assert engine.states["paper"].held == -2450.0

    # the same recording under the deterministic driver (backtest): the same outputs, in order
    recorded = await everything.next_batch(10_000)
    inputs = [e for e in recorded if e.channel.startswith("pnl.")]
    live = [(e.channel, e.payload) for e in recorded if e.channel.startswith("collateral")]
    clock = ManualClock(T0)
    driven = CollateralEngine(CollateralConfig(), bus=MemoryBus(clock=clock), clock=clock)
    await driven.on_start()
    outputs = await DeterministicDriver(driven).run(inputs)
    assert [(e.channel, e.payload) for e in outputs] == live
    assert len(live) == 16 + 10  # a state per PnL update, ten call transitions


def test_bad_agreement_files_fail_start_naming_the_field(tmp_path: Path) -> None:
    def with_first(**changes: Any) -> dict[str, Any]:
        first = {**AGREEMENTS["agreements"][0], **changes}
        return {"agreements": [first, *AGREEMENTS["agreements"][1:]]}

    cases: list[tuple[Any, str]] = [
        (with_first(threshold=-1.0), "agreements[0].threshold"),
        (with_first(currency="usd"), "agreements[0].currency"),
        (with_first(name="a.b"), "agreements[0].name"),
        (with_first(name="calls"), "agreements[0].name"),
        (with_first(name="bank-b"), "agreements[1].name"),
        (with_first(call_frequency="often"), "agreements[0].call_frequency"),
        (with_first(eligible=[{"asset_class": "x", "haircut": 1.0}]), "eligible[0].haircut"),
        (with_first(eligible=[{"asset_class": "x", "haircut": 0.1}] * 2), "agreements[0].eligible"),
        (with_first(tresh=1.0), "agreements[0]"),
        (with_first(counterparty=None), "agreements[0].counterparty"),
        ({"agreements": [{"name": "x"}]}, "agreements[0]"),
        ("{not json", "not JSON"),
    ]
    for content, field in cases:
        config = CollateralConfig(agreements=write_agreements(tmp_path, content))
        with pytest.raises(ValueError, match=r"agreements file .*") as err:
            clock = ManualClock(T0)
            CollateralEngine(config, bus=MemoryBus(clock=clock), clock=clock)
        assert field in str(err.value), (field, str(err.value))
    with pytest.raises(ValueError, match="cannot read"):
        load_agreements(str(tmp_path / "missing.json"))


def test_settings_come_from_the_environment(tmp_path: Path) -> None:
    path = write_agreements(tmp_path, AGREEMENTS)
    env = {"NAUTILUS_COLLATERAL_AGREEMENTS": path, "NAUTILUS_COLLATERAL_MAX_CRIF_ROWS": "50"}
    config = load_config(CollateralConfig, env)
    assert (config.name, config.agreements, config.max_crif_rows) == ("collateral", path, 50)
    with pytest.raises(ValueError):
        CollateralConfig(max_crif_rows=0)
    terms = {t.name: t for t in load_agreements()}  # the bundled demo
    assert list(terms) == ["paper"] and terms["paper"].account == "paper"
    assert terms["paper"].call_interval_ns == 300 * S and terms["paper"].auto_settle


# ── real PostgreSQL: what is stored survives a restart ──────────────────────────────────────


@pytest.fixture(scope="module")
def schema() -> Iterator[str]:
    with migrated_schema("nautilus_collateral") as name:
        yield name


async def test_state_and_calls_survive_a_restart_on_postgres(schema: str, tmp_path: Path) -> None:
    clock = ManualClock(T0)
    config = CollateralConfig(
        agreements=write_agreements(tmp_path, AGREEMENTS), db_dsn=TEST_DSN, db_schema=schema
    )
    first = CollateralEngine(config, bus=MemoryBus(clock=clock), clock=clock)
    await first.start()
    await first.bus.publish("pnl.paper", pnl(T0, "1002340"), event_ns=T0)
    await until(lambda: first.states["bank-a"].open_call is not None)
    call_id = f"bank-a-{T0}"
    clock.set(T0 + 30 * S)
    await first.call_event(call_id, CallEvent.DISPUTE, amount=1000.0, reason="valuation")
    await first.bus.publish("pnl.paper", pnl(T0 + 60 * S, "1003000"), event_ns=T0)
    await until(lambda: first.states["bank-a"].exposure == 3000.0)
    before = first.states["bank-a"]
    await first.stop()  # flushes the store

    clock.set(T0 + 120 * S)
    second = CollateralEngine(config, bus=MemoryBus(clock=clock), clock=clock)
    await second.start()
    try:
        restored = second.states["bank-a"]
        assert restored == before
        assert restored.open_call is not None and restored.open_call.state is CallState.DISPUTED
        assert second.health()["issues"] == []
        # the lifecycle continues on the restored call
        record = await second.call_event(call_id, CallEvent.AGREE, amount=1200.0)
        assert (record.from_state, record.to_state, record.seq) == ("disputed", "agreed", 3)
        await second.call_event(call_id, CallEvent.SETTLE)
        assert second.states["bank-a"].held == 1200.0
        # a late PnL after the restart is still late
        await second.bus.publish("pnl.paper", pnl(T0 + 30 * S, "1"), event_ns=T0)
        await until(lambda: "late" in second.health()["bad_input"].get("pnl.*", {}))  # type: ignore[attr-defined]
        await until(lambda: second.storage.store.stats().rows_queued == 0)
        page = await second.call_store.query("bank-a", 0, 2**62, 100)
        assert [(r.event, r.amount) for r in page.items] == [
            ("issue", 1400.0), ("dispute", 1000.0), ("agree", 1200.0), ("settle", 1200.0)
        ]  # fmt: skip
        history = await second.state_store.query("bank-a", 0, 2**62, 100)
        assert [s.held for s in history.items][-1] == 1200.0
        assert len(history.items) == 5  # issue, dispute, revalue, agree, settle
    finally:
        await second.stop()
