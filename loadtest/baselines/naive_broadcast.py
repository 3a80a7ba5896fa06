"""The naive broadcast server the hub is measured against: the typical ``websockets`` tutorial.

For each message: encode it once, then ``for ws in clients: await ws.send(text)``, one frame and
one write per client per message, awaiting each send (backpressure from a slow client stalls
everyone). It speaks just enough of protocol v1 for the same generator to measure it identically:
``subscribe`` gets an ``ack``; updates carry ``channel, seq, epoch, ts {event, publish, hub}``
and the same trade payload from the same publisher. Compression is off, as in the hub, so both
servers move the same bytes.

    python -m loadtest.baselines.naive_broadcast --rate 1000|max --core 0
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from loadtest.publisher import RatePublisher, trade_payloads
from loadtest.server_process import control_loop, parse_rate, prepare_process, server_arguments

Queued = tuple[int, int, int, Any]  # seq, event_ns, publish_ns, payload


class NaiveBroadcast:
    def __init__(self, channel: str) -> None:
        self.channel = channel
        self.epoch = secrets.token_hex(4)
        self.clients: set[ServerConnection] = set()
        self.queue: asyncio.Queue[Queued] = asyncio.Queue()
        self.seq = 0

    def publish(self, payload: Any, event_ns: int | None) -> None:
        self.seq += 1
        now = time.time_ns()
        self.queue.put_nowait((self.seq, now if event_ns is None else event_ns, now, payload))

    async def handler(self, ws: ServerConnection) -> None:
        try:
            async for raw in ws:
                request = orjson.loads(raw)
                if request.get("op") == "subscribe":
                    self.clients.add(ws)
                    ack = {"type": "ack", "id": request.get("id"), "op": "subscribe"}
                    await ws.send(orjson.dumps({**ack, "channels": [self.channel]}).decode())
        except ConnectionClosed:
            pass
        finally:
            self.clients.discard(ws)

    async def broadcast(self) -> None:
        while True:
            seq, event_ns, publish_ns, payload = await self.queue.get()
            message = orjson.dumps(
                {
                    "type": "update",
                    "channel": self.channel,
                    "seq": seq,
                    "epoch": self.epoch,
                    "ts": {"event": event_ns, "publish": publish_ns, "hub": time.time_ns()},
                    "data": payload,
                }
            ).decode()
            for ws in list(self.clients):
                try:
                    await ws.send(message)
                except ConnectionClosed:
                    self.clients.discard(ws)


async def serve_naive(channel: str, rate: int | None, max_backlog: int) -> None:
    server = NaiveBroadcast(channel)
    publisher = RatePublisher(
        server.publish,
        server.queue.qsize,
        trade_payloads(),
        rate=rate,
        max_backlog=max_backlog,
    )
    async with serve(server.handler, "127.0.0.1", 0, compression=None) as ws_server:
        port = next(iter(ws_server.sockets)).getsockname()[1]
        broadcaster = asyncio.create_task(server.broadcast())
        try:
            await control_loop(port, publisher)
        finally:
            broadcaster.cancel()
            ws_server.close(close_connections=True)


def main() -> None:
    args = server_arguments("Naive websockets broadcast server (benchmark baseline)").parse_args()
    prepare_process(args.core)
    asyncio.run(serve_naive(args.channel, parse_rate(args.rate), args.max_backlog))


if __name__ == "__main__":
    main()
