"""One client's requests, sans I/O: frames (or decoded requests) in, actions out (issue 8).

Modelled on python-websockets' ``protocol.py``: a pure state machine with thin I/O glue around
it. A ``Session`` holds what one connection asked for (its subscriptions, its inbound request
budget, the grant of its token) and decides every answer: acks with limits and recovery, errors
with their stable codes (protocol/README.md, "Errors"), pongs, the replay and status of a resume,
the rate-limit close. It reads no clock (the caller passes ``now_ns``), touches no socket and
awaits nothing. The only channel state it changes: an implicit channel is created on subscribe,
and a channel the hub held nothing of is seeded by a resume from the bus's history.

The caller (``Hub`` in ``server.py``) carries out the returned actions in order, in the same loop
turn: ``Attach`` before the ``Reply`` frames that follow it, so no live message can come between
an ack and its replay. ``ReadHistory`` is the one action that awaits: the hub reads the bus's
history into the request's ``BusRead`` objects and hands the request back to ``Session.attach``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from protocol.codec import decode_client, encode, error_from, peek_request_id
from protocol.errors import CloseCode, ErrorCode, ProtocolError
from protocol.messages import (
    Ack,
    ClientMessage,
    Error,
    ListChannels,
    Pong,
    Recovery,
    StatusState,
    Subscribe,
    Unsubscribe,
)
from protocol.sequence import NotRecoveredReason, ResumePlan
from realtime.hub.auth import AuthError, Grant, token_from_request, verify_token
from realtime.hub.channels import BusRead, ChannelRegistry, ChannelState
from realtime.hub.framing import batch_payloads, status

if TYPE_CHECKING:
    from realtime.hub.config import HubConfig
    from realtime.hub.metrics import HubStats

log = logging.getLogger("nautilus.hub")

# --- actions ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """Write ``payload`` now as one text frame, ahead of any data queued for a slow socket."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Attach:
    """Start delivering the live messages of ``channels`` (add the connection to their
    subscribers), in the same loop turn as the replies that follow."""

    channels: tuple[ChannelState, ...]


@dataclass(frozen=True, slots=True)
class Detach:
    """Stop delivering ``channels`` and drop what the connection still queues of them."""

    channels: tuple[ChannelState, ...]


@dataclass(frozen=True, slots=True)
class ReadHistory:
    """Fill ``reads`` from the bus's history (``Bus.history``, driven by ``BusRead.next_read``
    until ``channels.undecided`` is empty; a failed or timed-out read sets ``failed``), then
    call ``Session.attach(request, channels, reads, now_ns, refused=refused)``. The channels
    already count as subscribed (limits, ack lists, unsubscribe) but receive nothing until then.
    ``refused``: channels whose resume needed the bus while the connection's replay budget was
    spent; they are not read and answer ``not_recovered`` (``replay_limit``)."""

    request: Subscribe
    channels: tuple[ChannelState, ...]
    reads: Mapping[ChannelState, BusRead]
    refused: frozenset[ChannelState] = frozenset()


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection with ``code`` (protocol/README.md, "Close codes")."""

    code: CloseCode
    reason: str


Action: TypeAlias = Reply | Attach | Detach | ReadHistory | Close

# --- admission and inbound budget ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refusal:
    """An upgrade refused before any session exists: HTTP 401 with ``body`` as JSON."""

    message: str

    @property
    def body(self) -> dict[str, Any]:
        return {"error": {"code": "unauthorized", "message": self.message}}


def admit(secret: str, path: str, authorization: str | None, now_ns: int) -> Grant | Refusal:
    """The grant of a WebSocket upgrade on a hub with auth on: the token from
    ``Authorization: Bearer`` or ``?token=`` (``auth.token_from_request``), verified as HS256
    and unexpired at ``now_ns``."""
    try:
        return verify_token(secret, token_from_request(path, authorization), now_ns)
    except AuthError as exc:
        return Refusal(str(exc))


class TokenBucket:
    """A budget of ``rate`` per second, bursts up to ``capacity`` (default ``2 * rate``):
    inbound requests, and the replay work of a connection (messages, bytes)."""

    __slots__ = ("_capacity", "_last_ns", "_rate", "_tokens")

    def __init__(self, rate: int, now_ns: int, capacity: int | None = None) -> None:
        self._rate = float(rate)
        self._capacity = float(2 * rate if capacity is None else capacity)
        self._tokens = self._capacity
        self._last_ns = now_ns

    def available(self, now_ns: int) -> float:
        """What may be taken at ``now_ns`` (refilled for the time since the last call)."""
        elapsed = max(0, now_ns - self._last_ns) / 1e9
        self._last_ns = now_ns
        self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
        return self._tokens

    def spend(self, amount: float) -> None:
        """Take ``amount`` checked against ``available`` just before."""
        self._tokens -= amount

    def take(self, now_ns: int) -> bool:
        if self.available(now_ns) >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class ReplayBudget:
    """The replay work one connection may cause: messages and bytes, each a ``TokenBucket``
    of ``replay_*_per_second`` with a burst of ``max_replay_*``, which is also the most one
    subscribe may replay. A resumed channel is replayed whole or not at all (``not_recovered``,
    ``replay_limit``): never a partial replay."""

    __slots__ = ("bytes", "messages")

    def __init__(self, config: HubConfig, now_ns: int) -> None:
        self.messages = TokenBucket(
            config.replay_messages_per_second, now_ns, config.max_replay_messages
        )
        self.bytes = TokenBucket(config.replay_bytes_per_second, now_ns, config.max_replay_bytes)

    def allows(self, messages: int, now_ns: int) -> bool:
        """Whether ``messages`` more may be replayed (checked before the replay is built)."""
        return messages <= self.messages.available(now_ns)

    def take(self, replay: list[bytes], now_ns: int) -> bool:
        """Spend the budget on ``replay`` if it fits in messages and in bytes; else spend
        nothing and return ``False``."""
        size = sum(map(len, replay))
        if len(replay) > self.messages.available(now_ns) or size > self.bytes.available(now_ns):
            return False
        self.messages.spend(len(replay))
        self.bytes.spend(size)
        return True


def _over_replay_limit(ch: ChannelState) -> ResumePlan:
    """A resume refused for the replay work it would cost (``ReplayBudget``)."""
    return ResumePlan(False, ch.last_seq + 1, ch.last_seq, NotRecoveredReason.REPLAY_LIMIT)


# --- the session --------------------------------------------------------------------------------


class Session:
    """The requests of one WebSocket client, and what it is subscribed to.

    ``subscriptions`` is what the client asked for (the ack's ``channels``); ``live`` is the part
    already attached to the fan-out (the rest waits for the bus's history). After ``close`` (or
    a rate-limit close) the session answers nothing.
    """

    __slots__ = (
        "_channels",
        "_closed",
        "_config",
        "_stats",
        "grant",
        "live",
        "rate",
        "replay",
        "strikes",
        "subscriptions",
    )

    def __init__(
        self,
        config: HubConfig,
        channels: ChannelRegistry,
        grant: Grant,
        stats: HubStats,
        now_ns: int,
    ) -> None:
        self._config = config
        self._channels = channels
        self._stats = stats
        self._closed = False
        self.grant = grant
        self.rate = TokenBucket(config.max_messages_per_second, now_ns)
        self.replay = ReplayBudget(config, now_ns)
        #: rate-limited requests in a row
        self.strikes = 0
        self.subscriptions: set[ChannelState] = set()
        self.live: set[ChannelState] = set()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def names(self) -> tuple[str, ...]:
        """The effective subscription set, as acks list it."""
        return tuple(sorted(ch.name for ch in self.subscriptions))

    def receive(self, frame: str | bytes, now_ns: int) -> list[Action]:
        """One inbound WebSocket message: the rate limit, then decode, then ``request``."""
        if self._closed:
            return []
        if self.grant.expired(now_ns):
            return self.expire()
        cfg = self._config
        if not self.rate.take(now_ns):
            self.strikes += 1
            if self.strikes > cfg.rate_limit_strikes:
                self._stats.rate_limit_disconnects += 1
                self._closed = True
                return [Close(CloseCode.RATE_LIMIT, "message rate limit exceeded")]
            limit = cfg.max_messages_per_second
            dropped = ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"over {limit} requests/s",
                request_id=peek_request_id(frame),  # the request is dropped, its id still named
            )
            return [self._error(dropped)]
        self.strikes = 0
        try:
            if isinstance(frame, bytes):
                raise ProtocolError(ErrorCode.BINARY_NOT_SUPPORTED, "send JSON text frames")
            msg = decode_client(frame)
        except ProtocolError as exc:
            return [self._error(exc)]
        return self.request(msg, now_ns)

    def request(self, msg: ClientMessage, now_ns: int) -> list[Action]:
        """One decoded request (past the rate limit). A ``ProtocolError`` becomes one ``error``
        reply; any other exception an ``internal`` error: never a traceback to the client,
        never a dead connection."""
        if self._closed:
            return []
        if self.grant.expired(now_ns):
            return self.expire()
        try:
            if isinstance(msg, Subscribe):
                return self._subscribe(msg, now_ns)
            if isinstance(msg, Unsubscribe):
                return self._unsubscribe(msg)
            if isinstance(msg, ListChannels):
                return [Reply(encode(self._list(msg)))]
            return [Reply(encode(Pong(msg.id, now_ns)))]
        except ProtocolError as exc:
            return [self._error(exc)]
        except Exception:
            log.exception("hub: request failed")
            return [self._internal(None)]

    def attach(
        self,
        request: Subscribe,
        channels: tuple[ChannelState, ...],
        reads: Mapping[ChannelState, BusRead],
        now_ns: int,
        refused: frozenset[ChannelState] = frozenset(),
    ) -> list[Action]:
        """Finish a subscribe that waited for ``ReadHistory``: the reads are filled (or failed).
        Channels unsubscribed meanwhile are skipped, as are those attached again meanwhile."""
        if self._closed:
            return []
        try:
            return self._attach(request, channels, reads, now_ns, refused)
        except Exception:  # as in ``request``, with the request's id
            log.exception("hub: subscribe from the bus's history failed")
            return [self._internal(request.id)]

    def expire(self) -> list[Action]:
        """The token's ``exp`` has passed: close with 4001 (protocol/README.md, "Close codes");
        nothing more is answered or delivered."""
        self._stats.tokens_expired += 1
        return [*self.close(), Close(CloseCode.TOKEN_EXPIRED, "token expired")]

    def close(self) -> list[Action]:
        """The connection is gone or going: detach everything; answer nothing more."""
        self._closed = True
        dropped = tuple(self.subscriptions)
        self.subscriptions.clear()
        self.live.clear()
        return [Detach(dropped)] if dropped else []

    # --- requests ---------------------------------------------------------------------------

    def _subscribe(self, msg: Subscribe, now_ns: int) -> list[Action]:
        """All or nothing (protocol/README.md, "subscribe"): every channel granted, known (or
        implicit, while the hub holds fewer than ``max_channels``), and within the limits; else
        one error and no change. The grant is checked first, so an ungranted name is answered
        ``forbidden`` whether or not the hub carries it (no probing for channels)."""
        cfg, grant = self._config, self.grant
        implicit = 0  # channels to create, once the whole request is accepted
        if len(msg.channels) > cfg.max_channels_per_request:
            raise ProtocolError(
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                f"at most {cfg.max_channels_per_request} channels per request",
                field="channels",
                request_id=msg.id,
            )
        wanted: list[ChannelState | str] = []  # a name: an implicit channel to create
        for i, name in enumerate(msg.channels):
            if not grant.allows(name):
                raise ProtocolError(
                    ErrorCode.FORBIDDEN,
                    f"token does not grant {name!r}",
                    field=f"channels[{i}]",
                    request_id=msg.id,
                    channel=name,
                )
            ch = self._channels.get(name)
            if ch is None:
                why = f"no channel {name!r}"
                if cfg.implicit_channels:
                    if len(self._channels) + implicit < cfg.max_channels:
                        implicit += 1
                        wanted.append(name)
                        continue
                    why += f" and the hub holds its maximum of {cfg.max_channels} channels"
                raise ProtocolError(
                    ErrorCode.UNKNOWN_CHANNEL,
                    why,
                    field=f"channels[{i}]",
                    request_id=msg.id,
                    channel=name,
                )
            wanted.append(ch)
        fresh = [ch for ch in dict.fromkeys(wanted) if ch not in self.subscriptions]
        if len(self.subscriptions) + len(fresh) > cfg.max_subscriptions:
            raise ProtocolError(
                ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                f"at most {cfg.max_subscriptions} subscriptions per connection",
                field="channels",
                request_id=msg.id,
            )
        new = [self._channels.open(ch) if isinstance(ch, str) else ch for ch in fresh]
        for ch in new:
            ch.active_ns = now_ns
        reads: dict[ChannelState, BusRead] = {}
        refused: set[ChannelState] = set()
        for ch in new:
            position = msg.resume.get(ch.name)
            if position is not None and ch.needs_bus(ch.plan_resume(position)):
                if self.replay.allows(1, now_ns):
                    reads[ch] = BusRead(position, cfg.max_pending_messages)
                else:  # the replay budget is spent: not worth a read of the bus
                    refused.add(ch)
        self.subscriptions.update(new)
        if not reads:
            return self._attach(msg, tuple(new), reads, now_ns, frozenset(refused))
        return [ReadHistory(msg, tuple(new), reads, frozenset(refused))]

    def _attach(
        self,
        msg: Subscribe,
        channels: tuple[ChannelState, ...],
        reads: Mapping[ChannelState, BusRead],
        now_ns: int,
        refused: frozenset[ChannelState] = frozenset(),
    ) -> list[Action]:
        """Ack, then per channel its replay and status (or a snapshot), as one ordered reply.
        A replay past the connection's ``ReplayBudget`` is not sent: ``not_recovered``,
        ``replay_limit`` (as for ``refused`` channels, whose bus history was not read)."""
        stats = self._stats
        recovery: dict[str, Recovery] = {}
        data: list[bytes] = []
        attached: dict[ChannelState, None] = {}
        for ch in channels:
            if ch not in self.subscriptions or ch in self.live or ch in attached:
                continue  # unsubscribed, or subscribed again, while the bus was read
            attached[ch] = None
            position = msg.resume.get(ch.name)
            if position is not None:
                read = reads.get(ch)
                plan: ResumePlan | None
                replayed: list[bytes] | None = []
                if ch in refused:
                    plan = _over_replay_limit(ch)
                elif read is None:
                    plan = ch.plan_resume(position)
                    allowed = self.replay.allows(plan.replay_count, now_ns)
                    replayed = ch.replay(plan) if allowed else None
                else:
                    plan = ch.plan_bus_resume(read, final=True)
                    assert plan is not None, "a final plan is always decided"
                    allowed = self.replay.allows(plan.replay_count, now_ns)
                    replayed = ch.replay_from_bus(read, plan, now_ns) if allowed else None
                if replayed is None or not self.replay.take(replayed, now_ns):
                    plan, replayed = _over_replay_limit(ch), []
                if read is not None:
                    stats.bus_resumes["recovered" if plan.recovered else str(plan.reason)] += 1
                if plan.reason is NotRecoveredReason.REPLAY_LIMIT:
                    stats.replays_refused += 1
                stats.replayed_messages += len(replayed)
                stats.replayed_bytes += sum(map(len, replayed))
                reason = plan.reason.value if plan.reason else None
                epoch = ch.epoch or (read.epoch if read is not None else "")
                recovery[ch.name] = Recovery(
                    plan.recovered, len(replayed), epoch, ch.last_seq, reason
                )
                data.extend(replayed)
                state = StatusState.RECOVERED if plan.recovered else StatusState.NOT_RECOVERED
                data.append(
                    status(
                        ch.name,
                        state,
                        epoch=epoch,
                        to_seq=ch.last_seq,
                        count=len(replayed),
                        reason=reason,
                    )
                )
                if plan.recovered or not msg.snapshot:
                    continue
            if msg.snapshot and not ch.lossless and (snap := ch.snapshot(now_ns)) is not None:
                data.append(snap)
        self.live.update(attached)
        ack = Ack(msg.id, "subscribe", self.names, self._config.limits(), recovery or None)
        actions: list[Action] = [Attach(tuple(attached))] if attached else []
        actions.append(Reply(encode(ack)))
        if data:
            actions.extend(map(Reply, batch_payloads(data, self._config.max_batch_bytes)))
        stats.deliveries += len(data)
        return actions

    def _list(self, msg: ListChannels) -> Ack:
        """One page of the granted channels by name: after ``msg.after``, at most ``msg.limit``
        (capped at ``max_list_channels``); ``next`` names the page's last channel when more
        follow."""
        cap = self._config.max_list_channels
        limit = cap if msg.limit is None else min(msg.limit, cap)
        allows, after = self.grant.allows, msg.after

        def wanted(name: str) -> bool:
            return (after is None or name > after) and allows(name)

        page = self._channels.infos(wanted, limit + 1)  # one more: whether a next page exists
        more = len(page) > limit
        page = page[:limit]
        following = page[-1].name if more and page else None
        return Ack(msg.id, "list", self.names, None, None, page, following)

    def _unsubscribe(self, msg: Unsubscribe) -> list[Action]:
        dropped = {ch for name in msg.channels if (ch := self._channels.get(name)) is not None}
        dropped &= self.subscriptions
        self.subscriptions -= dropped
        self.live -= dropped
        actions: list[Action] = [Detach(tuple(dropped))] if dropped else []
        actions.append(Reply(encode(Ack(msg.id, "unsubscribe", self.names))))
        return actions

    # --- errors -----------------------------------------------------------------------------

    def _error(self, exc: ProtocolError) -> Reply:
        self._stats.errors[exc.code.value] += 1
        return Reply(encode(error_from(exc)))

    def _internal(self, request_id: int | str | None) -> Reply:
        self._stats.errors[ErrorCode.INTERNAL.value] += 1
        return Reply(encode(Error(request_id, ErrorCode.INTERNAL.value, "internal error")))
