"""The JavaScript client (realtime/hub/static/client.js) in headless Chromium, against real hubs.

The module is loaded from the hub's own ``GET /client.js`` into a page of the hub's origin and
drives a ``HubClient`` there; every event it dispatches is logged in the page and compared with
what the test published on the bus: order and payloads, acks and errors, a dropped connection
(recovered from the ring), a hub restart on the same port (not_recovered, then a gap event naming
exactly the messages published while no hub ran), the heartbeat watchdog, malformed frames from
a scripted server, and the delivery-class table against protocol/channels.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from playwright.async_api import Page, async_playwright
from websockets.asyncio.server import ServerConnection, serve

from protocol.channels import STREAM_KINDS, kind_of
from protocol.schemas import check_payload
from realtime.bus import MemoryBus
from realtime.hub import Hub, HubConfig

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
TRADES, QUOTES = "trades.SPY", "quotes.SPY"
EPOCH = "ep1"
FAST = {"reconnectMinMs": 20, "reconnectMaxMs": 200, "requestTimeoutMs": 5000}

#: Loads the module, makes a client and logs every event it dispatches as plain data.
_SETUP = """async ([url, options]) => {
  const m = await import("/client.js");
  window.M = m;
  window.log = [];
  window.frames_ = 0;
  const opts = Object.assign({}, options);
  if (opts.validatePx) {
    delete opts.validatePx;
    opts.validate = (channel, data) => {
      if (typeof data.px !== "number") throw new Error(channel + ": px must be a number");
    };
  }
  const c = new m.HubClient(url, opts);
  for (const t of ["open", "close", "status", "recovered", "not_recovered", "gap", "error"]) {
    c.addEventListener(t, (e) => window.log.push({ev: t, ...e.detail}));
  }
  c.addEventListener("message", (e) => window.log.push({ev: "message", ...e.detail}));
  c.addEventListener("messages", () => { window.frames_ += 1; });
  window.c = c;
  c.connect();
}"""


@asynccontextmanager
async def browser_page(port: int) -> AsyncIterator[Page]:
    """A headless Chromium page at the hub's origin (so ``import("/client.js")`` works)."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"http://127.0.0.1:{port}/health")
            yield page
            assert errors == [], errors
        finally:
            await browser.close()


@asynccontextmanager
async def running_hub(bus: MemoryBus, port: int = 0, **overrides: Any) -> AsyncIterator[Hub]:
    hub = Hub(HubConfig(port=port, heartbeat_interval_s=30.0, **overrides), bus)
    await hub.start()
    hub.declare([TRADES, QUOTES])
    try:
        yield hub
    finally:
        await hub.stop()


async def start_client(page: Page, port: int, **options: Any) -> None:
    await page.evaluate(_SETUP, [f"ws://127.0.0.1:{port}/ws", {**FAST, **options}])
    await wait_for(page, "e.ev === 'open'")


async def wait_for(page: Page, predicate: str, timeout_ms: int = 10_000) -> None:
    """Wait until some logged event ``e`` satisfies the JS ``predicate``."""
    await page.wait_for_function(f"window.log.some(e => {predicate})", timeout=timeout_ms)


async def events(page: Page) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await page.evaluate("window.log")
    return result


def messages(log: list[dict[str, Any]], channel: str = TRADES) -> list[dict[str, Any]]:
    return [e for e in log if e["ev"] == "message" and e["channel"] == channel]


def publish_trades(bus: MemoryBus, first: int, last: int) -> list[Any]:
    return [bus.publish_nowait(TRADES, {"i": n, "px": 430 + n / 4}) for n in range(first, last + 1)]


def update_seq(seq: int, channel: str = TRADES) -> str:
    return f"e.ev === 'message' && e.channel === '{channel}' && e.seq === {seq}"


async def test_js_client_receives_in_order_and_reports_errors() -> None:
    bus = MemoryBus(epoch=EPOCH)
    async with running_hub(bus) as hub, browser_page(hub.port) as page:
        # the delivery table is protocol/channels.py's, kind by kind
        table = await page.evaluate("import('/client.js').then(m => ({...m.STREAM_KINDS}))")
        assert table == {name: k.delivery.value for name, k in STREAM_KINDS.items()}
        names = ["trades.SPY", "risk.denials.paper", "risk.var.paper", "collateral.calls.a", "x"]
        kinds = await page.evaluate("n => import('/client.js').then(m => n.map(m.kindOf))", names)
        assert kinds == [kind_of(n) for n in names]

        await start_client(page, hub.port)
        quote = {"bid": 430.0, "ask": 430.02}
        bus.publish_nowait(QUOTES, quote)
        ack = await page.evaluate(f"c.subscribe(['{TRADES}', '{QUOTES}'])")
        assert ack["type"] == "ack" and set(ack["channels"]) == {TRADES, QUOTES}
        sent = publish_trades(bus, 1, 600)
        await wait_for(page, update_seq(600))
        log = await events(page)
        snapshot = next(e for e in log if e["ev"] == "message")
        assert (snapshot["type"], snapshot["channel"], snapshot["data"]) == (
            "snapshot",
            QUOTES,
            quote,
        )
        got = messages(log)
        assert [(m["seq"], m["data"]) for m in got] == [(e.seq, e.payload) for e in sent]
        # ns stamps as JS doubles: exact to 2^-52 relative, i.e. within 256 ns today
        stamps = [abs(m["ts"]["publish"] - e.publish_ns) for m, e in zip(got, sent, strict=True)]
        assert max(stamps) <= 256
        frames = await page.evaluate("window.frames_")
        assert frames < 600  # batch frames arrive as one `messages` event each
        state = await page.evaluate(f"c.channel('{TRADES}')")
        assert state == {
            "lossless": True,
            "epoch": EPOCH,
            "seq": 600,
            "received": 600,
            "missing": 0,
            "duplicates": 0,
        }
        listed = {c["name"]: c for c in await page.evaluate("c.list()")}
        assert (listed[TRADES]["seq"], listed[TRADES]["subscribers"]) == (600, 1)
        assert 0 < await page.evaluate("c.ping()") < 1000

        # an unknown channel: the promise rejects with the code, an error event, still connected
        refused = await page.evaluate(
            "c.subscribe(['trades.NOPE']).then(() => null, e => [e.name, e.error.code, e.error.field])"
        )
        assert refused == ["RequestError", "unknown_channel", "channels[0]"]
        await wait_for(page, "e.ev === 'error' && e.channel === 'trades.NOPE'")
        error = next(e for e in await events(page) if e["ev"] == "error")
        assert error["kind"] == "server" and error["error"]["code"] == "unknown_channel"
        assert await page.evaluate("c.subscriptions") == [TRADES, QUOTES]

        left = await page.evaluate(f"c.unsubscribe(['{TRADES}'])")
        assert left["channels"] == [QUOTES]
        publish_trades(bus, 601, 605)
        bus.publish_nowait(QUOTES, {"bid": 431.0})
        await wait_for(page, update_seq(2, QUOTES))
        assert [m["seq"] for m in messages(await events(page))][-1] == 600
        assert await page.evaluate("[c.state, c.stats.connects]") == ["open", 1]


async def test_js_client_resumes_after_a_drop_and_survives_a_hub_restart() -> None:
    bus = MemoryBus(epoch=EPOCH)
    async with running_hub(bus) as first:
        port = first.port
        async with browser_page(port) as page:
            # reconnects wait >= 240 ms: the messages published right after the drop are missed
            await start_client(page, port, reconnectMinMs=300, reconnectMaxMs=1000)
            await page.evaluate(f"c.subscribe(['{TRADES}'])")
            publish_trades(bus, 1, 20)
            await wait_for(page, update_seq(20))

            # a network blip: resumed from the hub's ring, recovered
            await page.evaluate("c.dropConnection()")
            missed = publish_trades(bus, 21, 30)
            await wait_for(page, "e.ev === 'recovered'")
            recovered = next(e for e in await events(page) if e["ev"] == "recovered")
            assert (recovered["count"], recovered["to_seq"]) == (10, 30)

            # the hub restarts on the same port: nothing to recover from a MemoryBus
            await first.stop()
            await wait_for(page, "e.ev === 'close' && e.code === 1001")
            lost = publish_trades(bus, 31, 40)
            async with running_hub(bus, port=port):
                await wait_for(page, "e.ev === 'not_recovered'")
                later = publish_trades(bus, 41, 45)
                await wait_for(page, update_seq(45))
                log = await events(page)
    got = messages(log)
    assert [m["seq"] for m in got] == list(range(1, 31)) + list(range(41, 46))
    assert [m["data"] for m in got[20:30]] == [e.payload for e in missed]
    assert [m["data"] for m in got[30:]] == [e.payload for e in later]
    not_recovered = next(e for e in log if e["ev"] == "not_recovered")
    assert not_recovered["reason"] == "ahead_of_stream"  # protocol/README.md, "Resume rules"
    gaps = [e for e in log if e["ev"] == "gap"]
    assert gaps == [
        {
            "ev": "gap",
            "channel": TRADES,
            "epoch": EPOCH,
            "from_seq": lost[0].seq,
            "to_seq": lost[-1].seq,
            "count": 10,
        }
    ]
    order = [e["ev"] for e in log if e["ev"] in ("recovered", "not_recovered", "gap", "open")]
    assert order == ["open", "open", "recovered", "open", "not_recovered", "gap"]


async def test_js_client_heartbeat_watchdog_reconnects_a_silent_connection() -> None:
    bus = MemoryBus(epoch=EPOCH)
    async with running_hub(bus) as hub, browser_page(hub.port) as page:
        await start_client(page, hub.port, heartbeatIntervalMs=100, missedHeartbeats=2)
        await page.evaluate(f"c.subscribe(['{TRADES}'])")
        publish_trades(bus, 1, 3)
        await wait_for(page, "e.ev === 'recovered'")  # after the watchdog's reconnect
        log = await events(page)
    close = next(e for e in log if e["ev"] == "close")
    assert close["reason"] == "heartbeat timeout: no frame for 0.2 s"
    assert [m["seq"] for m in messages(log)] == [1, 2, 3]


async def test_js_client_turns_malformed_frames_and_bad_payloads_into_error_events() -> None:
    def update(seq: Any, data: Any) -> dict[str, Any]:
        ts = {"event": 1, "publish": 2, "hub": 3}
        return {
            "type": "update",
            "channel": TRADES,
            "seq": seq,
            "epoch": EPOCH,
            "ts": ts,
            "data": data,
        }

    script = [
        "{not json",
        orjson.dumps({"type": "martian"}).decode(),
        orjson.dumps(update("7", {"px": 0.5})).decode(),
        orjson.dumps(
            {"type": "batch", "messages": [update(1, {"px": 1.5}), 17, update(2, {"px": 2.5})]}
        ).decode(),
        orjson.dumps(update(3, {"px": "bad"})).decode(),
        orjson.dumps(update(4, {"px": 4.5})).decode(),
    ]

    async def handler(ws: ServerConnection) -> None:
        request = orjson.loads(await ws.recv())
        ack = {"type": "ack", "id": request["id"], "op": "subscribe", "channels": [TRADES]}
        await ws.send(orjson.dumps(ack).decode())
        for frame in script:
            await ws.send(frame)
        with contextlib.suppress(Exception):
            await ws.wait_closed()

    bus = MemoryBus(epoch=EPOCH)
    async with (
        running_hub(bus) as hub,
        serve(handler, "127.0.0.1", 0) as scripted,
        browser_page(hub.port) as page,
    ):
        port = next(iter(scripted.sockets)).getsockname()[1]
        await start_client(page, port, validatePx=True)
        await page.evaluate(f"c.subscribe(['{TRADES}'])")
        await wait_for(page, update_seq(4))
        log = await events(page)
        assert await page.evaluate("c.stats.connects") == 1
    shown = [(e["ev"], e.get("kind") or e.get("seq")) for e in log if e["ev"] != "open"]
    assert shown == [
        ("error", "malformed"),  # not JSON
        ("error", "malformed"),  # unknown type
        ("error", "malformed"),  # seq as a string
        ("message", 1),
        ("error", "malformed"),  # 17 inside the batch
        ("message", 2),
        ("error", "schema"),  # px is not a number: dropped, position advances
        ("message", 4),
    ]
    errors = [e for e in log if e["ev"] == "error"]
    assert errors[0]["frame"] == "{not json"
    assert "martian" in errors[1]["message"]
    assert "seq must be a positive integer" in errors[2]["message"]
    assert errors[4]["channel"] == TRADES and "px must be a number" in errors[4]["message"]
    assert not [e for e in log if e["ev"] == "gap"]


_CHECK_ALL = """async (cases) => {
  const m = await import("/client.js");
  const check = m.payloadChecker(await (await fetch("/asyncapi.json")).json());
  return cases.map(([channel, data]) => {
    try { check(channel, data); return null; } catch (e) { return e.message; }
  });
}"""


def python_verdict(channel: str, payload: Any) -> str | None:
    try:
        check_payload(channel, payload)
    except ValueError as exc:
        return str(exc)
    return None


async def test_js_payload_checker_from_the_hubs_asyncapi_agrees_with_check_payload() -> None:
    """``payloadChecker`` (client.js, reading ``GET /asyncapi.json``) and
    ``protocol.schemas.check_payload`` give the same verdict and the same JSON path on real
    payload shapes and on every one-field mutation of them."""
    examples = [
        ("trades.SPY", {"s": "SPY", "t": 1, "r": 1, "p": 430.25, "q": 100.0, "a": "buy",
                        "i": 7, "x": "P", "c": 0}),
        ("book.BTCUSDT", {"s": "BTCUSDT", "t": 5, "u": 9, "bids": [[100.0, 1.0]],
                          "asks": [[100.5, 0.3]]}),
        ("orders.paper", {"client_order_id": "a-1", "account": "paper", "strategy": "a",
                          "symbol": "SPY", "side": "buy", "type": "market",
                          "quantity": "10", "status": "submitted", "event_ns": 1}),
    ]  # fmt: skip
    cases: list[tuple[str, Any]] = []
    for channel, payload in examples:
        cases.append((channel, payload))
        for key in payload:
            cases.append((channel, {k: v for k, v in payload.items() if k != key}))
            for replacement in (None, "x", 1.5, [], {}, [[1.0]]):
                cases.append((channel, {**payload, key: replacement}))
    bus = MemoryBus(epoch=EPOCH)
    async with running_hub(bus) as hub, browser_page(hub.port) as page:
        in_js = await page.evaluate(_CHECK_ALL, cases)
    in_python = [python_verdict(channel, payload) for channel, payload in cases]
    assert in_python[0] is None and sum(v is not None for v in in_python) > len(cases) // 2
    for case, js, py in zip(cases, in_js, in_python, strict=True):
        assert (js is None) == (py is None), (case, js, py)
        if py is not None:
            assert js.split(":")[0] == py.split(":")[0], (case, js, py)  # the same JSON path
