"""The kernel's floor under a fan-out tick: one frame written to each of N loopback TCP sockets.

    python -m loadtest.send_floor [--connections 100] [--rounds 3000] [--frame-bytes 230]

Any server, in any language, that sends one frame to N subscribers makes N ``write`` calls; on
loopback each call also runs the receiver's TCP receive path and wakes the reader, all on the
sender's core. This measures that cost alone, with the fan-out benchmark's layout: the writer
pinned to the hub's core, a reader process on the generator's core waiting in ``epoll`` and
reading everything, one round of N writes (``socket.send``, TCP_NODELAY, as the hub's sockets)
every millisecond. A round's duration is how late the last subscriber's frame leaves after the
first one's: the hub's "publish → last write" cannot beat it, nor can a client's p99 at N
connections (its frame leaves k/N of a round after the tick starts, plus delivery).

Used by ``loadtest.fanout`` for its fixed-rate scenarios (the ``floor`` columns); alone it prints
a line and, with ``--json``, the result as one ``emit`` line (event ``floor``).
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import time

import numpy as np

from loadtest.process import emit, pin_to_core, raise_fd_limit

#: Rounds discarded at the start (connections and caches settling).
WARMUP_ROUNDS = 100
#: Pause between rounds: the fixed-rate scenarios' tick (1,000 msg/s).
ROUND_PAUSE_S = 0.001


def _read_all(port: int, connections: int, total_bytes: int, core: int | None) -> None:
    """The reader process: connect, then read until every byte of every round arrived."""
    pin_to_core(core)
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
    poller = select.epoll()
    by_fd = {}
    for sock in socks:
        sock.setblocking(False)
        poller.register(sock.fileno(), select.EPOLLIN)
        by_fd[sock.fileno()] = sock
    received = 0
    while received < total_bytes:
        for fd, _ in poller.poll():
            try:
                received += len(by_fd[fd].recv(1 << 16))
            except BlockingIOError:
                continue


def measure(
    connections: int,
    *,
    rounds: int = 3_000,
    frame_bytes: int = 230,
    writer_core: int | None = 0,
    reader_core: int | None = 1,
) -> dict[str, float | int]:
    """Round durations of ``rounds`` rounds of ``connections`` writes (µs percentiles)."""
    raise_fd_limit()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(min(connections, 4096))
    port = listener.getsockname()[1]
    total = connections * (rounds + WARMUP_ROUNDS) * frame_bytes
    reader = os.fork()
    if reader == 0:  # pragma: no cover - the child process
        try:
            listener.close()
            _read_all(port, connections, total, reader_core)
        finally:
            os._exit(0)
    pin_to_core(writer_core)
    try:
        accepted = [listener.accept()[0] for _ in range(connections)]
        for sock in accepted:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        frame = b"x" * frame_bytes
        took = np.empty(rounds + WARMUP_ROUNDS, dtype=np.int64)
        clock = time.perf_counter_ns
        for i in range(rounds + WARMUP_ROUNDS):
            started = clock()
            for sock in accepted:
                sock.send(frame)
            took[i] = clock() - started
            time.sleep(ROUND_PAUSE_S)
    finally:
        os.waitpid(reader, 0)
        listener.close()
    round_us = took[WARMUP_ROUNDS:] / 1e3
    p50, p99 = (float(v) for v in np.percentile(round_us, [50, 99]))
    return {
        "connections": connections,
        "rounds": rounds,
        "frame_bytes": frame_bytes,
        "round_p50_ms": round(p50 / 1e3, 3),
        "round_p99_ms": round(p99 / 1e3, 3),
        "round_max_ms": round(float(round_us.max()) / 1e3, 3),
        "send_p50_us": round(p50 / connections, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="kernel floor of a fan-out tick (N writes)")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3_000)
    parser.add_argument("--frame-bytes", type=int, default=230)
    parser.add_argument(
        "--json", action="store_true", help="the result as one JSON line (event 'floor')"
    )
    args = parser.parse_args(argv)
    result = measure(args.connections, rounds=args.rounds, frame_bytes=args.frame_bytes)
    if args.json:
        emit("floor", **result)
    else:
        print(
            f"{args.connections} writes of {args.frame_bytes} B: round p50"
            f" {result['round_p50_ms']} ms, p99 {result['round_p99_ms']} ms,"
            f" max {result['round_max_ms']} ms; {result['send_p50_us']} µs a write"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
