"""The bus: topic → payload, the only way engines talk to each other and to the hub.

``base.Bus`` is the interface; ``memory.MemoryBus`` is the in-process implementation used in
embedded mode. A Redis implementation plugs in behind the same interface (distributed mode).
"""

from __future__ import annotations

from realtime.bus.base import Bus, BusClosed, BusUnavailable, Envelope, Subscription
from realtime.bus.memory import MemoryBus

__all__ = ["Bus", "BusClosed", "BusUnavailable", "Envelope", "MemoryBus", "Subscription"]
