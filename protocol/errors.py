"""Stable error and close codes: the names clients switch on. Never renumber, never rename."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ErrorCode(StrEnum):
    """Machine codes carried by ``error`` messages (see protocol/README.md, "Errors")."""

    BAD_JSON = "bad_json"
    BAD_MESSAGE = "bad_message"
    UNKNOWN_OP = "unknown_op"
    BAD_CHANNEL = "bad_channel"
    UNKNOWN_CHANNEL = "unknown_channel"
    BAD_RESUME = "bad_resume"
    TOO_MANY_SUBSCRIPTIONS = "too_many_subscriptions"
    RATE_LIMITED = "rate_limited"
    BINARY_NOT_SUPPORTED = "binary_not_supported"
    FORBIDDEN = "forbidden"
    INTERNAL = "internal"


class CloseCode(IntEnum):
    """WebSocket close codes the hub uses; 4xxx are ours (RFC 6455 §7.4.2 private range)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013
    TOKEN_EXPIRED = 4001
    SLOW_CONSUMER = 4008
    RATE_LIMIT = 4029


class ProtocolError(Exception):
    """A message that breaks the contract. The edge turns it into one ``error`` reply.

    ``field`` names the offending part of the request (``channels[1]``, ``resume.trades.SPY.seq``)
    and ``request_id`` is echoed when the request carried a readable one.
    """

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        field: str | None = None,
        request_id: int | str | None = None,
        channel: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.request_id = request_id
        self.channel = channel
