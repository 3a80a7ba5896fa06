"""Errors an engine's REST resources raise; ``app.create_app`` maps them once to JSON 4xx.

Every error body has one shape, ``{"error": {"code", "message", "parameter"}}``: ``code`` is a
stable machine name clients switch on, ``parameter`` names the offending query parameter (or
``None``). Resources raise these and never build error responses themselves.
"""

from __future__ import annotations

from typing import ClassVar


class DomainError(Exception):
    """A request the engine understood but cannot satisfy (HTTP 422 unless a subclass says)."""

    status: ClassVar[int] = 422
    default_code: ClassVar[str] = "unprocessable"

    def __init__(self, message: str, *, parameter: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.parameter = parameter
        self.code = code or self.default_code


class ValidationError(DomainError):
    """A malformed request parameter (HTTP 400); ``parameter`` names it."""

    status = 400
    default_code = "invalid_parameter"


class NotFoundError(DomainError):
    """The addressed thing does not exist (HTTP 404), e.g. an unknown symbol."""

    status = 404
    default_code = "not_found"


class ConflictError(DomainError):
    """The request conflicts with the engine's current state (HTTP 409)."""

    status = 409
    default_code = "conflict"
