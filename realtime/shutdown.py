"""How a process stops on SIGINT/SIGTERM, one rule for every command (``nautilus up``, ``hub``,
``engine``, the supervisor of ``up --distributed``): the first signal asks for a clean, bounded
shutdown; a second one, while that shutdown runs, leaves at once, quietly."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable

__all__ = ["stop_then_force"]


def stop_then_force(
    stop: asyncio.Event, force_exit: Callable[[int], object] = os._exit
) -> Callable[[int], None]:
    """The SIGINT/SIGTERM handler of a running platform: the first signal sets ``stop`` (a
    clean, bounded shutdown); a second one, while that shutdown runs, leaves at once with one
    line and exit code 128 + the signal (130 for Ctrl-C): nothing more is flushed or closed."""
    received = 0

    def on_signal(signum: int) -> None:
        nonlocal received
        received += 1
        if received == 1:
            print("nautilus: stopping (interrupt again to exit at once)", file=sys.stderr)
            stop.set()
            return
        print("nautilus: interrupted again: exiting now", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        force_exit(128 + signum)

    return on_signal
