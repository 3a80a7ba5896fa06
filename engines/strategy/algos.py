"""Execution algorithms (TWAP, POV) and the ``Execution`` that runs orders over a venue, pure.

``Execution.submit`` takes an approved (``submitted``) order: a plain one goes to the venue as
it is; a market order of a strategy configured with an algorithm becomes a *parent*, accepted at
once and worked by children (``<parent>-c<k>``, ``parent_order_id`` set, market GTC) sent to the
venue as the algorithm releases them. Children are the parent's approval, not new intents: their
transitions start at ``accepted``. Each child fill also moves the parent (``partially_filled`` →
``filled``, volume-weighted average price); a parent whose children all ended short of its
quantity is canceled (``children_incomplete``). Fills are published for children only, so the
ledger counts each share once.

* ``Twap``: ``slices`` children every ``interval_s`` from the parent's event time; child k gets
  ``⌊Qk/n⌋ − ⌊Q(k−1)/n⌋`` on the lot grid, so the slices sum to the parent exactly.
* ``Pov``: after each trade of the symbol, children of ``rate`` × its size (accumulated until a
  whole lot), never more than the parent's remainder; our own children's prints are not
  subtracted from the market volume (the simulated venue does not print them).

Time is market event time: slices come due on the first trade or quote at or after their time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

import msgspec

from engines.strategy.core import (
    TERMINAL,
    AlgoSpec,
    apply_fill,
    child_order_id,
    floor_to_lot,
    transition,
)
from engines.strategy.venue import VenueAdapter, VenueEvent, known
from protocol.records import (
    Fill,
    Instrument,
    Order,
    OrderStatus,
    OrderType,
    Quote,
    TimeInForce,
    Trade,
)

__all__ = ["Execution", "Pov", "Twap"]

ZERO = Decimal(0)


@dataclass(slots=True)
class Twap:
    """Equal slices of ``total`` at ``start_ns + k·interval_ns``, k = 0 … slices − 1."""

    total: Decimal
    lot: Decimal
    slices: int
    interval_ns: int
    start_ns: int
    sent: int = 0

    def due(self, now_ns: int) -> list[Decimal]:
        """Quantities of the slices due by ``now_ns`` not yet released (empty slices skipped)."""
        released: list[Decimal] = []
        while self.sent < self.slices and self.start_ns + self.sent * self.interval_ns <= now_ns:
            k = self.sent
            quantity = floor_to_lot(self.total * (k + 1) / self.slices, self.lot) - floor_to_lot(
                self.total * k / self.slices, self.lot
            )
            self.sent += 1
            if quantity > 0:
                released.append(quantity)
        return released

    @property
    def done(self) -> bool:
        return self.sent == self.slices


@dataclass(slots=True)
class Pov:
    """Children of ``rate`` × traded volume from ``start_ns`` on, in whole lots."""

    total: Decimal
    lot: Decimal
    rate: Decimal
    start_ns: int
    sent: Decimal = ZERO
    credit: Decimal = ZERO

    def on_volume(self, size: Decimal, now_ns: int) -> Decimal:
        """The child quantity released by a trade of ``size`` at ``now_ns`` (0: none yet)."""
        if now_ns < self.start_ns or self.done:
            return ZERO
        self.credit += self.rate * size
        quantity = min(floor_to_lot(self.credit, self.lot), self.total - self.sent)
        if quantity > 0:
            self.credit -= quantity
            self.sent += quantity
        return quantity

    @property
    def done(self) -> bool:
        return self.sent >= self.total


@dataclass(slots=True)
class _Parent:
    order: Order
    algo: Twap | Pov
    children: dict[str, Order] = field(default_factory=dict)


@dataclass(slots=True)
class Execution:
    """Routes approved orders to ``venue``, working algorithm parents through children."""

    venue: VenueAdapter
    instruments: Mapping[str, Instrument]
    parents: dict[str, _Parent] = field(default_factory=dict)
    parent_of: dict[str, str] = field(default_factory=dict)

    def submit(self, order: Order, algo: AlgoSpec | None = None) -> list[VenueEvent]:
        """Take a ``submitted`` order; events in the order they happened."""
        if (
            algo is None
            or order.type is not OrderType.MARKET
            or not known(self.instruments, order.symbol)
        ):
            return self._roll_up(self.venue.submit(order))
        lot = self.instruments[order.symbol].lot
        t = order.event_ns
        worker: Twap | Pov = (
            Twap(order.quantity, lot, algo.slices, round(algo.interval_s * 1e9), t)
            if algo.kind == "twap"
            else Pov(order.quantity, lot, Decimal(repr(algo.rate)), t)
        )
        parent = _Parent(transition(order, OrderStatus.ACCEPTED, event_ns=t), worker)
        self.parents[order.client_order_id] = parent
        events: list[VenueEvent] = [parent.order]
        if isinstance(worker, Twap):
            events += self._release(parent, worker.due(t), t)
        return self._roll_up(events)

    def cancel(self, client_order_id: str, event_ns: int) -> list[VenueEvent]:
        """Cancel a working order; a parent with its working children."""
        parent = self.parents.pop(client_order_id, None)
        if parent is None:
            return self._roll_up(self.venue.cancel(client_order_id, event_ns))
        events: list[VenueEvent] = []
        for child in parent.children.values():
            if child.status not in TERMINAL:
                events += self.venue.cancel(child.client_order_id, event_ns)
        for child_id in parent.children:
            self.parent_of.pop(child_id, None)
        events.append(transition(parent.order, OrderStatus.CANCELED, event_ns=event_ns))
        return events

    def on_trade(self, trade: Trade) -> list[VenueEvent]:
        events: list[VenueEvent] = []
        t = trade.event_ns
        for parent in self._parents_of(trade.symbol):
            if isinstance(parent.algo, Twap):
                events += self._release(parent, parent.algo.due(t), t)
            else:
                quantity = parent.algo.on_volume(Decimal(repr(trade.size)), t)
                events += self._release(parent, [quantity] if quantity > 0 else [], t)
        events += self.venue.on_trade(trade)
        return self._roll_up(events)

    def on_quote(self, quote: Quote) -> list[VenueEvent]:
        events: list[VenueEvent] = []
        for parent in self._parents_of(quote.symbol):
            if isinstance(parent.algo, Twap):
                events += self._release(parent, parent.algo.due(quote.event_ns), quote.event_ns)
        events += self.venue.on_quote(quote)
        return self._roll_up(events)

    def _parents_of(self, symbol: str) -> list[_Parent]:
        return [p for p in self.parents.values() if p.order.symbol == symbol]

    def _release(self, parent: _Parent, quantities: list[Decimal], t: int) -> list[VenueEvent]:
        events: list[VenueEvent] = []
        for quantity in quantities:
            k = len(parent.children) + 1
            child = msgspec.structs.replace(
                parent.order,
                client_order_id=child_order_id(parent.order.client_order_id, k),
                parent_order_id=parent.order.client_order_id,
                quantity=quantity,
                status=OrderStatus.SUBMITTED,
                type=OrderType.MARKET,
                time_in_force=TimeInForce.GTC,
                price=None,
                stop_price=None,
                filled_quantity=ZERO,
                average_price=None,
                event_ns=t,
                reason=f"{type(parent.algo).__name__.lower()} slice {k}",
            )
            parent.children[child.client_order_id] = child
            self.parent_of[child.client_order_id] = parent.order.client_order_id
            events += self.venue.submit(child)
        return events

    def _roll_up(self, events: list[VenueEvent]) -> list[VenueEvent]:
        """``events`` with each child fill followed by its parent's resulting transition."""
        out: list[VenueEvent] = []
        for event in events:
            out.append(event)
            coid = event.client_order_id
            parent_id = self.parent_of.get(coid)
            parent = self.parents.get(parent_id) if parent_id else None
            if parent is None:
                continue
            if isinstance(event, Fill):
                parent.order = apply_fill(
                    parent.order, event.quantity, event.price, event_ns=event.event_ns
                )
                out.append(parent.order)
                settled = parent.children[coid].status in TERMINAL
            else:
                parent.children[coid] = event
                # a filled child's fill follows it: the child settles on that
                settled = event.status in TERMINAL and event.status is not OrderStatus.FILLED
            if not settled:
                continue
            del self.parent_of[coid]
            if parent.order.status is OrderStatus.FILLED:
                del self.parents[parent.order.client_order_id]
            elif parent.algo.done and all(c.status in TERMINAL for c in parent.children.values()):
                del self.parents[parent.order.client_order_id]
                parent.order = transition(
                    parent.order, OrderStatus.CANCELED, event_ns=event.event_ns,
                    reason="children_incomplete",
                )  # fmt: skip
                out.append(parent.order)
        return out
