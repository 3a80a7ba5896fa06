"""The standalone generator and the per-client bookkeeping the Locust user shares with it.

The reference for every count is the frames themselves: what was published, decoded by the
protocol's own decoder, against the seqs the hub numbered.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson

from loadtest.generator import StreamAccount, run_standalone
from protocol.codec import decode_client, encode, encode_data, join_batch
from protocol.messages import Ack, Recovery, Status, StatusState, Subscribe
from realtime.bus.memory import MemoryBus
from realtime.hub.config import HubConfig
from realtime.hub.server import Hub

ROOT = Path(__file__).resolve().parents[2]


def _msg(channel: str, seq: int, *, kind: str = "update", epoch: str = "e1") -> bytes:
    return encode_data(kind, channel, seq, epoch, 10, 20, 30, {"price": 1.5})


def test_loss_counts_from_the_first_seq_and_only_on_lossless_channels() -> None:
    account = StreamAccount(["trades.SPY", "quotes.SPY"])
    frames = [
        _msg("quotes.SPY", 40, kind="snapshot"),
        join_batch([_msg("trades.SPY", 100), _msg("trades.SPY", 101)]),  # first seen: 100
        join_batch([_msg("quotes.SPY", 45), _msg("trades.SPY", 104)]),  # 102, 103 lost
        _msg("trades.SPY", 104),  # duplicate
        _msg("quotes.SPY", 50),  # latest-value skipping 46..49: conflation, not loss
    ]
    problems = [p for f in frames for p in account.on_frame(f).problems]
    assert [(p.channel, p.what, p.amount) for p in problems] == [
        ("trades.SPY", "gap", 2),
        ("trades.SPY", "duplicate", 1),
    ]
    trades, quotes = account.channels["trades.SPY"], account.channels["quotes.SPY"]
    assert trades.first_seq == 100 and trades.lost == 2 and trades.tracker.duplicates == 1
    assert quotes.lost == 0 and quotes.conflated == 4 + 4
    assert account.totals()["received"] == 3 + 3  # a duplicate is not received twice
    # a resume asks for trades after the last seq held; latest-value channels get a snapshot
    request = decode_client(account.subscribe(7))
    assert isinstance(request, Subscribe)
    assert request.channels == ("trades.SPY", "quotes.SPY")
    assert {c: (p.epoch, p.seq) for c, p in request.resume.items()} == {"trades.SPY": ("e1", 104)}


def test_replay_is_tagged_and_announced_gaps_are_counted_once() -> None:
    account = StreamAccount(["trades.SPY"])
    account.on_frame(_msg("trades.SPY", 1))
    ack = Ack(2, "subscribe", ("trades.SPY",), recovery={"trades.SPY": Recovery(True, 2, "e1", 3)})
    result = account.on_frame(encode(ack))
    assert result.replies[0]["type"] == "ack"
    recovered = Status("trades.SPY", StatusState.RECOVERED, count=2, to_seq=3, epoch="e1")
    result = account.on_frame(
        join_batch([_msg("trades.SPY", 2), _msg("trades.SPY", 3), encode(recovered)])
    )
    assert [d.replay for d in result.data] == [True, True] and not result.problems
    assert [d.replay for d in account.on_frame(_msg("trades.SPY", 4)).data] == [False]
    gap = Status("trades.SPY", StatusState.GAP, count=3, from_seq=5, to_seq=7, epoch="e1")
    problems = account.on_frame(join_batch([encode(gap), _msg("trades.SPY", 8)])).problems
    assert [(p.what, p.amount) for p in problems] == [("gap_announced", 3)]
    assert account.channels["trades.SPY"].lost == 3
    # a new epoch mid-stream cannot say what was lost: a problem of its own
    problems = account.on_frame(_msg("trades.SPY", 1, epoch="e2")).problems
    assert [p.what for p in problems] == ["epoch_change"]


def test_errors_and_bad_frames_are_problems_not_crashes() -> None:
    account = StreamAccount(["trades.SPY"])
    error = (
        b'{"type":"error","id":1,"code":"unknown_channel","message":"no","channel":"trades.SPY"}'
    )
    assert [p.what for p in account.on_frame(error).problems] == ["error"]
    assert [p.what for p in account.on_frame(b"{not json").problems] == ["error"]
    assert [p.what for p in account.on_frame(_msg("trades.X", 1)).problems] == ["unexpected"]


async def _serve(
    channels: list[str], before: int, rate_per_tick: int
) -> tuple[Hub, MemoryBus, asyncio.Task[None], list[int]]:
    bus = MemoryBus()
    hub = Hub(HubConfig(port=0), bus)
    await hub.start()
    hub.declare(channels)
    published = [0]
    for _ in range(before):  # published before any client connects: not a loss for anyone
        bus.publish_nowait(channels[0], {"price": 1.0})
        published[0] += 1

    async def publish() -> None:
        while True:
            for _ in range(rate_per_tick):
                bus.publish_nowait(channels[0], {"price": 1.0})
                published[0] += 1
            bus.publish_nowait(channels[1], {"bid": 1.0})
            await asyncio.sleep(0.002)

    return hub, bus, asyncio.create_task(publish()), published


async def test_standalone_run_against_a_hub_that_has_been_publishing() -> None:
    channels = ["trades.SIM", "quotes.SIM"]
    hub, bus, publisher, published = await _serve(channels, before=500, rate_per_tick=5)
    try:
        result = await run_standalone(
            f"ws://127.0.0.1:{hub.port}/", channels, 4, 1.0, "picows", warmup_s=0.2
        )
    finally:
        publisher.cancel()
        await hub.stop()
        await bus.close()
    assert result["subscribed"] == 4
    assert result["lost"] == 0 and result["duplicates"] == 0 and not result["problems"]
    trades = result["per_channel"]["trades.SIM"]
    # each client saw the trades published after it subscribed: fewer than all, far more than 0
    assert 4 * 100 < trades["received"] < 4 * (published[0] - 500 + 1)
    assert result["per_channel"]["quotes.SIM"]["delivery"] == "latest-value"
    assert result["delivered_per_s"] > 0 and result["latency_publish_ms"]["p50"] is not None
    assert result["generator_bound"] == (result["generator_cpu_pct"] > 70)


async def test_cli_writes_json_and_prints_the_table(tmp_path: Path) -> None:
    hub, bus, publisher, _ = await _serve(["trades.SIM", "quotes.SIM"], 10, 2)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "loadtest.generator", "--url", f"ws://127.0.0.1:{hub.port}/",
            "--channels", "trades.SIM,quotes.SIM", "--connections", "2", "--duration", "0.5",
            "--out", str(tmp_path / "g.json"),
            cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        publisher.cancel()
        await hub.stop()
        await bus.close()
    assert proc.returncode == 0, err.decode()
    document = orjson.loads((tmp_path / "g.json").read_bytes())
    assert document["connections"] == 2 and document["subscribed"] == 2
    assert document["lost"] == 0 and document["received"] > 0
    assert "generator_cpu_pct" in document and "generator_bound" in document
    assert "trades.SIM" in out.decode() and "generator CPU" in out.decode()
