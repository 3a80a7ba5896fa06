"""Optional token auth: HS256 JWTs whose ``channels`` claim lists the patterns a client may read.

    {"sub": "ui-42", "channels": ["trades.*", "bars.>"], "exp": 1767225600}

The token comes as ``?token=...`` on the WebSocket URL or ``Authorization: Bearer ...``.
"""

from __future__ import annotations

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


def verify_token(secret: str, token: str | None) -> Grant:
    if not token:
        raise AuthError("missing token")
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp"]})
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid token: {exc}") from None
    raw = claims.get("channels")
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        raise AuthError("token has no 'channels' list")
    try:
        patterns = tuple(ChannelPattern.parse(p) for p in raw)
    except ValueError as exc:
        raise AuthError(f"bad channel pattern in token: {exc}") from None
    subject = claims.get("sub")
    return Grant(subject if isinstance(subject, str) else None, patterns)
