"""All I/O of streaming: the hub, the bus, stores, the process runner and the CLI."""

from __future__ import annotations

__version__ = "0.1.0"
