"""The control loop shared by the hub under test and the naive baseline process.

Commands on stdin: ``start`` (begin publishing), ``mark`` (the measured window begins; answers
``marked``), ``stop`` (stop; answers ``stopped`` with ``last_seq`` and what the probe, if any,
measured since ``mark``), ``exit`` or end of input (shut down). Answers on stdout, one JSON line
each.
"""

from __future__ import annotations

import argparse
from typing import Any, Protocol

from loadtest.process import emit, install_uvloop, pin_to_core, raise_fd_limit, stdin_lines
from loadtest.publisher import RatePublisher


def server_arguments(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--channel", default="trades.SIM")
    parser.add_argument("--rate", default="max", help="messages per second, or 'max'")
    parser.add_argument("--max-backlog", type=int, default=256, help="max-rate backlog bound")
    parser.add_argument("--core", type=int, default=None, help="CPU to pin this process to")
    return parser


def parse_rate(text: str) -> int | None:
    return None if text == "max" else int(text)


def prepare_process(core: int | None) -> None:
    pin_to_core(core)
    raise_fd_limit()
    install_uvloop()


class Probe(Protocol):
    """What a server process measures about itself over the window (``mark`` → ``stop``)."""

    def mark(self) -> None: ...

    def report(self) -> dict[str, Any]: ...


async def control_loop(port: int, publisher: RatePublisher, probe: Probe | None = None) -> None:
    """Announce ``ready`` with the port, then obey stdin until ``exit``."""
    commands = await stdin_lines()
    emit("ready", port=port)
    while line := await commands.readline():
        command = line.decode().strip()
        if command == "start":
            publisher.start()
            emit("started")
        elif command == "mark":
            if probe is not None:
                probe.mark()
            emit("marked")
        elif command == "stop":
            last_seq = await publisher.stop()
            emit("stopped", last_seq=last_seq, **(probe.report() if probe is not None else {}))
        elif command == "exit":
            break
    await publisher.stop()
