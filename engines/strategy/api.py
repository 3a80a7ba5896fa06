"""Strategy REST: configured strategies and their state, orders by account and status, one order,
enable/disable a strategy.

* ``GET /strategy/strategies`` — each strategy's config, positions, targets, open orders;
* ``GET /strategy/orders?account=&status=&limit=`` — the newest transition of each order kept
  in memory (``max_orders``), oldest first, the last ``limit`` (default 1 000) of those matching;
  ``status`` one of the state machine's states (400 names ``status`` otherwise);
* ``GET /strategy/orders/{client_order_id}`` — one order (404 when unknown);
* ``POST /strategy/{name}/enable`` and ``/disable`` — switch a strategy's callbacks on or off
  (its fills still count); 404 for an unknown strategy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import falcon.asgi

from engines.shell import Route
from engines.shell.errors import NotFoundError
from engines.shell.openapi import Items
from engines.shell.params import query_enum, query_int, query_symbol
from engines.shell.rest import media
from protocol.records import Order, OrderStatus

if TYPE_CHECKING:
    from engines.strategy.service import StrategyEngine


class StrategiesResource:
    def __init__(self, engine: StrategyEngine) -> None:
        self.engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = {"strategies": self.engine.describe()}


class OrdersResource:
    response_type = Items(Order)

    def __init__(self, engine: StrategyEngine) -> None:
        self.engine = engine

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        account = query_symbol(req, "account")
        status = query_enum(req, "status", OrderStatus, default=None)
        limit = query_int(req, "limit", default=1_000, minimum=1, maximum=100_000)
        matching = [
            order
            for order in self.engine.orders.values()
            if (account is None or order.account == account)
            and (status is None or order.status is status)
        ]
        resp.media = {"items": [media(order) for order in matching[-limit:]]}


class OrderResource:
    response_type = Order

    def __init__(self, engine: StrategyEngine) -> None:
        self.engine = engine

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, client_order_id: str
    ) -> None:
        order = self.engine.orders.get(client_order_id)
        if order is None:
            raise NotFoundError(f"no order {client_order_id!r}", parameter="client_order_id")
        resp.media = media(order)


class SwitchResource:
    def __init__(self, engine: StrategyEngine, enabled: bool) -> None:
        self.engine = engine
        self.enabled = enabled

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, name: str
    ) -> None:
        running = self.engine.strategies.get(name)
        if running is None:
            raise NotFoundError(f"no strategy {name!r}", parameter="name")
        running.state.enabled = self.enabled
        resp.media = {"name": name, "enabled": self.enabled}


def routes(engine: StrategyEngine) -> Sequence[Route]:
    return (
        ("/strategy/strategies", StrategiesResource(engine)),
        ("/strategy/orders", OrdersResource(engine)),
        ("/strategy/orders/{client_order_id}", OrderResource(engine)),
        ("/strategy/{name}/enable", SwitchResource(engine, True)),
        ("/strategy/{name}/disable", SwitchResource(engine, False)),
    )
