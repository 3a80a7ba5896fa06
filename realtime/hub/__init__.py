"""The WebSocket hub: moves channels from the bus to clients. Knows nothing about finance."""

from __future__ import annotations

from realtime.hub.config import HubConfig, LosslessOverflow
from realtime.hub.server import Hub

__all__ = ["Hub", "HubConfig", "LosslessOverflow"]
