"""The scenario table of the fan-out benchmark (issue 2, "Figures to reach").

``rate=None`` is max rate: the publisher keeps the server's backlog topped up and the number that
matters is deliveries per second, not publishes. ``idle`` scenarios publish nothing and measure the
server's memory per subscribed connection. ``baseline_of`` names the hub scenario a naive-server
scenario is compared with.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class Server(StrEnum):
    HUB = "hub"
    NAIVE = "naive"


#: The module each server runs as (``python -m``).
SERVER_MODULES = {
    Server.HUB: "loadtest.hub_under_test",
    Server.NAIVE: "loadtest.baselines.naive_broadcast",
}


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    server: Server
    connections: int
    #: Messages per second on the channel; ``None`` is max rate.
    rate: int | None
    idle: bool = False
    warmup_s: float = 2.0
    window_s: float = 10.0
    channel: str = "trades.SIM"
    #: For a naive scenario, the hub scenario it is the baseline of.
    baseline_of: str | None = None
    #: What the issue asks of this scenario, shown next to the result.
    target: str = ""

    def quick(self) -> Scenario:
        return replace(self, warmup_s=1.0, window_s=3.0)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("hub-100c-1k", Server.HUB, 100, 1_000, target="p99 <= 1 ms"),
    Scenario("hub-1000c-1k", Server.HUB, 1_000, 1_000, target="0 lost, p99 <= 25 ms"),
    Scenario("hub-100c-max", Server.HUB, 100, None),
    Scenario("hub-1000c-max", Server.HUB, 1_000, None, target=">= 2M/s, >= 10x naive"),
    Scenario("naive-100c-max", Server.NAIVE, 100, None, baseline_of="hub-100c-max"),
    Scenario("naive-1000c-max", Server.NAIVE, 1_000, None, baseline_of="hub-1000c-max"),
    Scenario("hub-5000c-idle", Server.HUB, 5_000, None, idle=True, target="<= 20 KB/conn"),
)

BY_NAME = {s.name: s for s in SCENARIOS}
