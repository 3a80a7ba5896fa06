"""Execution algorithms (TWAP, POV) and the ``Execution`` that runs orders over a venue, pure.

``Execution.submit`` takes an approved (``submitted``) order: a plain one goes to the venue as
it is; a market order of a strategy configured with an algorithm becomes a *parent*, accepted at
once and worked by children (``<parent>-c<k>``, ``parent_order_id`` set, market GTC) released
as the algorithm says. A released child is an *intent* (``initialized``, returned among the
events): it goes through pre-trade risk like any order before it reaches the venue — the engine
publishes it on ``intents.<strategy>``, Risk checks what applies to a child (trading state,
order rate, price reference and collar, per-order quantity and notional; the parent's approval
covers the position and exposure limits) and answers on ``orders.<account>``; ``submit`` of the
approved (``submitted``) child sends it to the venue, ``deny`` of a denied one cancels the
parent's remainder (its working children canceled, the parent ``canceled`` with reason
``child_denied``). A child approved after its parent ended is canceled (``parent_closed``),
never sent. Each child fill also moves the parent (``partially_filled`` → ``filled``,
volume-weighted average price); a parent whose children all ended short of its quantity is
canceled (``children_incomplete``). Fills are published for children only, so the ledger counts
each share once. The round trip through Risk is the same live (bus) and in a backtest (the
replay routes the intent to Risk and the answer back before the next print), so a child never
fills on the print that released it: it fills from the next one on.

* ``Twap``: ``slices`` children every ``interval_s`` from the parent's event time; child k gets
  ``⌊Qk/n⌋ − ⌊Q(k−1)/n⌋`` on the lot grid, so the slices sum to the parent exactly.
* ``Pov``: after each trade of the symbol, children of ``rate`` × its size (accumulated until a
  whole lot), never more than the parent's remainder; our own children's prints are not
  subtracted from the market volume (the simulated venue does not print them).

Time is market event time: slices come due on the first trade or quote at or after their time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
        """Take a ``submitted`` order (a child: its approval); events in the order they
        happened."""
        if order.parent_order_id is not None:
            return self._submit_child(order)
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

    def restore(
        self,
        orders: Sequence[Order],
        fills: Mapping[str, int],
        first_ns: Mapping[str, int],
        algo_of: Callable[[Order], AlgoSpec | None],
    ) -> list[Order]:
        """Take back a previous run's working orders at restart (crash-only: from the stored
        transitions). ``orders`` is the newest state of every order it made (any status, in
        the order they were first stored), ``fills`` the fills each had, ``first_ns`` the
        event time of each one's first transition (an intent's: its signal time, when its
        algorithm started), ``algo_of`` the algorithm configured now for an order's strategy.
        Working orders go back to the venue; an algorithm parent gets its worker back (TWAP:
        the slices due by its newest child were released; POV: its children's quantities were
        released, the fraction of a lot it had accumulated is lost) and its children. Returns
        the orders Risk approved that never reached the venue (``submitted``): the caller
        submits them again."""
        children: dict[str, list[Order]] = {}
        for order in orders:
            if order.parent_order_id is not None:
                children.setdefault(order.parent_order_id, []).append(order)
        again: list[Order] = []
        working = (OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED)
        for order in orders:
            if order.status in TERMINAL or order.parent_order_id is not None:
                continue
            coid = order.client_order_id
            algo = algo_of(order)
            if order.status is OrderStatus.SUBMITTED:
                again.append(order)
            elif order.status is OrderStatus.INITIALIZED:
                continue  # still Risk's: its answer is taken as it comes
            elif (
                algo is not None
                and order.type is OrderType.MARKET
                and known(self.instruments, order.symbol)
            ):
                mine = children.get(coid, [])
                worker = self._worker(order, algo, first_ns.get(coid, order.event_ns), mine)
                parent = _Parent(order, worker, {c.client_order_id: c for c in mine})
                self.parents[coid] = parent
                for child in mine:
                    if child.status in TERMINAL:
                        continue
                    self.parent_of[child.client_order_id] = coid
                    if child.status in working:
                        self.venue.restore(child, fills.get(child.client_order_id, 0))
                    elif child.status is OrderStatus.SUBMITTED:
                        again.append(child)
            elif order.status in working:
                self.venue.restore(order, fills.get(coid, 0))
        return again

    def _worker(
        self, parent: Order, algo: AlgoSpec, start_ns: int, children: Sequence[Order]
    ) -> Twap | Pov:
        """The algorithm of ``parent`` (started at ``start_ns``) as it stood after releasing
        ``children``."""
        lot = self.instruments[parent.symbol].lot
        if algo.kind == "twap":
            twap = Twap(parent.quantity, lot, algo.slices, round(algo.interval_s * 1e9), start_ns)
            if children:
                twap.due(max(c.event_ns for c in children))
            return twap
        pov = Pov(parent.quantity, lot, Decimal(repr(algo.rate)), start_ns)
        pov.sent = sum((c.quantity for c in children), ZERO)
        return pov

    def cancel(self, client_order_id: str, event_ns: int, *, reason: str = "") -> list[VenueEvent]:
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
        events.append(
            transition(parent.order, OrderStatus.CANCELED, event_ns=event_ns, reason=reason)
        )
        return events

    def deny(self, child: Order) -> list[VenueEvent]:
        """Pre-trade risk denied ``child``: cancel the rest of its parent (nothing when the
        parent has already ended)."""
        parent_id = self.parent_of.pop(child.client_order_id, None)
        parent = self.parents.get(parent_id) if parent_id else None
        if parent is None:
            return []
        parent.children[child.client_order_id] = child
        return self.cancel(parent.order.client_order_id, child.event_ns, reason="child_denied")

    def _submit_child(self, child: Order) -> list[VenueEvent]:
        """An approved child to the venue, if its parent is still working it."""
        parent_id = self.parent_of.get(child.client_order_id)
        if parent_id is None or parent_id not in self.parents:
            return [transition(child, OrderStatus.CANCELED, event_ns=child.event_ns,
                               reason="parent_closed")]  # fmt: skip
        self.parents[parent_id].children[child.client_order_id] = child
        return self._roll_up(self.venue.submit(child))

    def on_trade(self, trade: Trade) -> list[VenueEvent]:
        if not self.parents:  # no algorithm working (every print of a plain-order strategy)
            return self._roll_up(self.venue.on_trade(trade))
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
                status=OrderStatus.INITIALIZED,
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
            events.append(child)  # an intent: to pre-trade risk, then back through submit
        return events

    def _roll_up(self, events: list[VenueEvent]) -> list[VenueEvent]:
        """``events`` with each child fill followed by its parent's resulting transition."""
        if not self.parent_of or not events:  # no child working: nothing to roll up
            return events
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
