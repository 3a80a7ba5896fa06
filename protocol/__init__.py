"""The wire contract of Nautilus Realtime, sans-I/O.

Bytes in, typed messages out (and back). Nothing here imports asyncio, websockets or falcon:
the hub, the engines' publishers, the load generator and the tests all share this one module.
See ``protocol/README.md`` for the specification.
"""

from __future__ import annotations

PROTOCOL_VERSION = 1
