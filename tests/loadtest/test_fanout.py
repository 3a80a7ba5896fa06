"""The fan-out harness counts and reports correctly (no performance assertions: see loadtest/)."""

from __future__ import annotations

import pytest

from loadtest.fanout import ratios, run_scenario, table
from loadtest.generator import ConnectionState, Recorder, loss, percentiles
from loadtest.publisher import trade_payloads
from loadtest.scenarios import Scenario, Server
from protocol.codec import decode_server, encode, encode_data, join_batch
from protocol.messages import Batch, Status, StatusState, Update


def _update(seq: int, sent_ns: int = 1_000) -> bytes:
    payload = trade_payloads(4)[seq % 4]
    return encode_data("update", "trades.SIM", seq, "e1", sent_ns, sent_ns, sent_ns, payload)


def _decoded_updates(frames: list[bytes]) -> list[int]:
    """Seqs of every update in the frames, by the protocol's full decoder (the reference)."""
    seqs: list[int] = []
    for frame in frames:
        msg = decode_server(frame)
        for m in msg.messages if isinstance(msg, Batch) else (msg,):
            if isinstance(m, Update):
                seqs.append(m.seq)
    return seqs


def test_frame_count_matches_the_full_decoder() -> None:
    gap = encode(Status("trades.SIM", StatusState.GAP, from_seq=8, to_seq=8, epoch="e1", count=1))
    frames = [
        _update(3),  # seqs 1 and 2 never arrived: lost at the head
        join_batch([_update(s) for s in range(4, 8)]),
        join_batch([_update(9), _update(10), _update(12)]),  # 11 missing inside a batch
        join_batch([gap, _update(13)]),  # a status inside a batch takes the full-decode path
        b'{"type":"heartbeat","ts":5}',
        _update(16),  # 14 and 15 missing between frames
    ]
    recorder = Recorder()
    state = ConnectionState(recorder)
    for frame in frames:
        state.on_payload(frame)
    seqs = _decoded_updates(frames)
    assert recorder.delivered == state.received == len(seqs) == 10
    assert state.first_seq == 3 and state.epoch == "e1"
    assert recorder.statuses == {"gap": 1}
    assert recorder.heartbeats == 1
    # against the publisher's last seq 18: 2 at the head, 8, 11, 14, 15 inside, 17-18 at the tail
    lost = loss([state], 18)
    reference = 18 - len(seqs)
    assert lost["lost"] == reference == 8
    assert lost["lost_head"] == 2 and lost["lost_after_first"] == 6
    assert not state.holds(18) and state.holds(12)


def test_a_client_that_got_nothing_lost_everything() -> None:
    recorder = Recorder()
    states = [ConnectionState(recorder), ConnectionState(recorder)]
    states[0].on_payload(join_batch([_update(s) for s in range(1, 6)]))
    assert loss(states, 5) | {"received": 5} == loss(states, 5)
    assert loss(states, 5)["lost"] == 5 and loss(states, 5)["lost_never_received"] == 5


def test_latency_sampled_every_nth_frame_stands_for_the_skipped_frames() -> None:
    recorder = Recorder(sample_every=4)
    recorder.recording = True
    state = ConnectionState(recorder)
    for seq in range(1, 41):
        state.on_payload(_update(seq, sent_ns=0))
    assert sum(recorder.publish.buckets.values()) == 40  # 10 samples x weight 4
    assert sum(recorder.event.buckets.values()) == 40


def test_latency_is_weighted_by_messages_in_the_frame() -> None:
    recorder = Recorder()
    recorder.recording = True
    state = ConnectionState(recorder)
    state.on_payload(join_batch([_update(s, sent_ns=0) for s in range(1, 101)]))
    # one sample (the oldest message), counted for all 100 messages of the frame
    assert sum(recorder.publish_hist.values()) == 100
    assert len(recorder.publish_hist) == 1


def test_percentiles_pick_the_bucket_holding_the_quantile() -> None:
    hist = {0: 98, 9: 1, 99: 1}  # buckets of 1.024 µs
    out = percentiles(hist, max_ns=100 * 1024)
    assert out == {"p50": 0.001, "p99": 0.01, "p999": 0.102, "max": 0.102}


@pytest.mark.parametrize("server", [Server.HUB, Server.NAIVE])
async def test_smoke_scenario_counts_every_delivery(server: Server) -> None:
    scenario = Scenario("smoke", server, 5, 200, warmup_s=0.2, window_s=1.0)
    row = await run_scenario(scenario)
    report = row["generator"]
    assert row["published"] > 200  # 1.2 s at 200/s, then a drain
    # every client received every message the publisher numbered, exactly once
    assert report["received"] == 5 * row["published"]
    assert row["lost"] == 0 and report["surplus"] == 0
    assert row["generator_cpu_pct"] >= 0 and row["generator_bound"] in (True, False)
    assert report["cpu_pct"] >= 0
    assert row["errors"] == 0
    assert 0 < report["delivered"] <= report["received"]
    assert row["latency_publish_ms"]["p50"] is not None
    assert row["hub_cpu_pct"] >= 0 and row["hub_rss_mb"] > 0
    assert "smoke" in table([row], ratios([row]))


async def test_idle_scenario_reports_memory_per_connection() -> None:
    row = await run_scenario(Scenario("idle", Server.HUB, 20, None, idle=True, warmup_s=0.2))
    assert row["subscribed"]["acked"] == 20
    assert "hub_bytes_per_connection" in row
    assert "KB hub RSS per subscribed connection" in table([row], {})
