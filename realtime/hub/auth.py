"""Optional token auth: HS256 JWTs whose ``channels`` claim lists the patterns a client may read.

    {"sub": "ui-42", "channels": ["trades.*", "bars.>"], "exp": 1767225600}

The token comes as ``?token=...`` on the WebSocket URL or ``Authorization: Bearer ...``. ``exp``
is checked against the hub's injected clock (not the library's wall clock), and a grant carries
it so the hub can close the connection when it passes (close code 4001). No in-band refresh: a
client reconnects with a new token (and resumes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import jwt

from protocol.channels import ChannelPattern


class AuthError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Grant:
    subject: str | None
    patterns: tuple[ChannelPattern, ...]
    #: when the token expires (``exp``, ns since the Unix epoch); ``None``: never (auth off)
    expires_ns: int | None = None

    def expired(self, now_ns: int) -> bool:
        return self.expires_ns is not None and now_ns >= self.expires_ns

    def allows(self, channel: str) -> bool:
        return any(p.matches(channel) for p in self.patterns)


ALLOW_ALL = Grant(None, (ChannelPattern.parse(">"),))


def issue_token(secret: str, channels: Sequence[str], *, subject: str, expires_at: int) -> str:
    """Sign a token (operators and tests; the hub only verifies)."""
    for pattern in channels:
        ChannelPattern.parse(pattern)
    claims = {"sub": subject, "channels": list(channels), "exp": expires_at}
    return jwt.encode(claims, secret, algorithm="HS256")


def token_from_request(path: str, authorization: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    values = parse_qs(urlsplit(path).query).get("token")
    return values[0] if values else None


def verify_token(secret: str, token: str | None, now_ns: int) -> Grant:
    """The grant of ``token`` at ``now_ns`` (the caller's clock); ``AuthError`` says why not."""
    if not token:
        raise AuthError("missing token")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            options={"require": ["exp"], "verify_exp": False},  # checked below, on our clock
        )
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid token: {exc}") from None
    exp = claims["exp"]
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        raise AuthError("invalid token: 'exp' must be a number")
    expires_ns = int(exp * 1_000_000_000)
    if now_ns >= expires_ns:
        raise AuthError("invalid token: Signature has expired")
    raw = claims.get("channels")
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        raise AuthError("token has no 'channels' list")
    try:
        patterns = tuple(ChannelPattern.parse(p) for p in raw)
    except ValueError as exc:
        raise AuthError(f"bad channel pattern in token: {exc}") from None
    subject = claims.get("sub")
    return Grant(subject if isinstance(subject, str) else None, patterns, expires_ns)
