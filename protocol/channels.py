"""Channel grammar: the one place channel names are built, parsed and matched.

A channel name is dot-separated segments: a *kind* first, then the kind's parameters, e.g.
``trades.SPY``, ``bars.1m.SPY``, ``vpin.SPY``, ``risk.var.main``. Each kind declares how many
parameters it takes and its delivery class, so a name alone tells a client how it is delivered.
A kind may be two segments (``risk.denials``, ``collateral.calls``) when one family carries both
a lossless event stream and a latest-value state: the longer kind wins when both could match.

Patterns (bus subscriptions, auth grants) use NATS-style wildcards: ``*`` matches exactly one
segment, a trailing ``>`` matches one or more remaining segments (``trades.*``, ``bars.>``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from protocol.errors import ErrorCode, ProtocolError

MAX_CHANNEL_LENGTH = 128
_SEGMENT = re.compile(r"[A-Za-z0-9_\-]{1,40}")
_BAR_SPEC = re.compile(r"(?:[1-9][0-9]*[smhd]|(?:tick|volume|dollar)[1-9][0-9]*)")


class DeliveryClass(StrEnum):
    """How a stream reaches a client (protocol/README.md, "Delivery classes").

    ordered-lossless: every message in ``seq`` order, never conflated; a gap is announced and
    recoverable from history. latest-value: only the newest value matters; a snapshot is sent on
    subscribe and a slow client may be conflated (and is told how many values it skipped).
    """

    ORDERED_LOSSLESS = "ordered-lossless"
    LATEST_VALUE = "latest-value"


@dataclass(frozen=True, slots=True)
class StreamKind:
    name: str
    delivery: DeliveryClass
    params: tuple[str, ...]
    description: str


def _kind(name: str, delivery: DeliveryClass, params: tuple[str, ...], text: str) -> StreamKind:
    return StreamKind(name, delivery, params, text)


_LOSSLESS = DeliveryClass.ORDERED_LOSSLESS
_LATEST = DeliveryClass.LATEST_VALUE

#: Every stream kind on the wire. Adding a stream family is one line here.
STREAM_KINDS: dict[str, StreamKind] = {
    k.name: k
    for k in (
        _kind("trades", _LOSSLESS, ("symbol",), "every trade print, in exchange order"),
        _kind("bars", _LOSSLESS, ("spec", "symbol"), "completed bars (time, tick, volume, $)"),
        _kind("quotes", _LATEST, ("symbol",), "best bid/offer"),
        _kind("book", _LATEST, ("symbol",), "L2 order book, top levels"),
        _kind("vpin", _LATEST, ("symbol",), "VPIN order-flow toxicity per volume bucket"),
        _kind("evpin", _LATEST, ("symbol",), "enhanced VPIN variants side by side"),
        _kind("features", _LATEST, ("symbol",), "every indicator of a symbol, one message a bar"),
        _kind("factor", _LATEST, ("model", "symbol"), "factor exposures and residuals"),
        _kind("ml", _LATEST, ("model", "symbol"), "model predictions with version and data time"),
        _kind("signals", _LATEST, ("name", "key"), "engine signals"),
        _kind("intents", _LOSSLESS, ("strategy",), "orders a strategy asks for (initialized)"),
        _kind("orders", _LOSSLESS, ("account",), "every order state transition of an account"),
        _kind("fills", _LOSSLESS, ("account",), "order fills of an account"),
        _kind("positions", _LATEST, ("account",), "positions of an account"),
        _kind("pnl", _LATEST, ("account",), "cash, equity and PnL of an account"),
        _kind("risk", _LATEST, ("metric", "account"), "risk metrics of an account (risk.var.*)"),
        _kind("risk.denials", _LOSSLESS, ("account",), "orders refused by pre-trade checks"),
        _kind("analytics", _LATEST, ("key",), "performance statistics of a return stream"),
        _kind("collateral", _LATEST, ("agreement",), "exposure, collateral held, open call"),
        _kind("collateral.calls", _LOSSLESS, ("agreement",), "every margin-call transition"),
        _kind("backtest", _LATEST, ("job",), "backtest progress and results"),
    )
}


def kind_of(name: str) -> str:
    """The kind a channel name belongs to (``risk.denials.paper`` → ``risk.denials``), or its
    first segment when no kind matches."""
    first, _, rest = name.partition(".")
    second = rest.partition(".")[0]
    longer = f"{first}.{second}"
    return longer if second and longer in STREAM_KINDS else first


@dataclass(frozen=True, slots=True)
class Channel:
    """A parsed channel name. ``str(channel)`` is the wire name."""

    kind: str
    params: tuple[str, ...]

    @property
    def name(self) -> str:
        return ".".join((self.kind, *self.params))

    @property
    def delivery(self) -> DeliveryClass:
        return STREAM_KINDS[self.kind].delivery

    def __str__(self) -> str:
        return self.name


def parse_channel(name: object, *, field: str = "channel") -> Channel:
    """Parse and validate a channel name; raise ``ProtocolError(bad_channel)`` naming ``field``."""
    if not isinstance(name, str):
        raise ProtocolError(ErrorCode.BAD_CHANNEL, "channel must be a string", field=field)
    if not name or len(name) > MAX_CHANNEL_LENGTH:
        raise ProtocolError(
            ErrorCode.BAD_CHANNEL,
            f"channel must be 1..{MAX_CHANNEL_LENGTH} characters",
            field=field,
        )
    kind = kind_of(name)
    params = name.split(".")[kind.count(".") + 1 :]
    spec = STREAM_KINDS.get(kind)
    if spec is None:
        known = ", ".join(sorted(STREAM_KINDS))
        raise ProtocolError(
            ErrorCode.BAD_CHANNEL, f"unknown stream kind {kind!r} (known: {known})", field=field
        )
    if len(params) != len(spec.params):
        shape = ".".join((kind, *(f"<{p}>" for p in spec.params)))
        raise ProtocolError(
            ErrorCode.BAD_CHANNEL, f"{kind} channels are named {shape}", field=field
        )
    for label, value in zip(spec.params, params, strict=True):
        if not _SEGMENT.fullmatch(value):
            raise ProtocolError(
                ErrorCode.BAD_CHANNEL,
                f"{label} {value!r} must be 1-40 of A-Z a-z 0-9 _ -",
                field=field,
            )
    if kind == "bars" and not _BAR_SPEC.fullmatch(params[0]):
        raise ProtocolError(
            ErrorCode.BAD_CHANNEL,
            f"bar spec {params[0]!r} must be like 1s, 1m, 5m, 1h, 1d, tick100, volume5000,"
            " dollar1000000",
            field=field,
        )
    return Channel(kind, tuple(params))


def channel(kind: str, *params: str) -> str:
    """Build a validated channel name: ``channel("bars", "1m", "SPY") == "bars.1m.SPY"``."""
    return parse_channel(".".join((kind, *params))).name


def trades(symbol: str) -> str:
    return channel("trades", symbol)


def quotes(symbol: str) -> str:
    return channel("quotes", symbol)


def book(symbol: str) -> str:
    return channel("book", symbol)


def bars(spec: str, symbol: str) -> str:
    return channel("bars", spec, symbol)


def delivery_of(name: str) -> DeliveryClass:
    """Delivery class of a (valid) channel name."""
    return STREAM_KINDS[kind_of(name)].delivery


@dataclass(frozen=True, slots=True)
class ChannelPattern:
    """A subscription pattern: ``*`` is one segment, a final ``>`` is one or more segments."""

    segments: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> ChannelPattern:
        if not text or len(text) > MAX_CHANNEL_LENGTH:
            raise ValueError(f"pattern must be 1..{MAX_CHANNEL_LENGTH} characters: {text!r}")
        segments = tuple(text.split("."))
        for i, seg in enumerate(segments):
            if seg == ">" and i != len(segments) - 1:
                raise ValueError(f"'>' may only end a pattern: {text!r}")
            if seg not in ("*", ">") and not _SEGMENT.fullmatch(seg):
                raise ValueError(f"bad pattern segment {seg!r} in {text!r}")
        return cls(segments)

    @property
    def is_literal(self) -> bool:
        return not any(seg in ("*", ">") for seg in self.segments)

    def matches(self, name: str) -> bool:
        parts = name.split(".")
        pattern = self.segments
        if pattern[-1] == ">":
            if len(parts) < len(pattern):
                return False
            pattern = pattern[:-1]
            parts = parts[: len(pattern)]
        elif len(parts) != len(pattern):
            return False
        return all(p == "*" or p == s for p, s in zip(pattern, parts, strict=True))

    def __str__(self) -> str:
        return ".".join(self.segments)
