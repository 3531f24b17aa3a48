"""The one error root of Concord: every code of docs/protocol.md section 4 is a class here.

Each class carries a stable wire ``code``, whether a client may retry, and the HTTP
status; facts travel as attributes, not only in the message. Adapters translate their
driver errors into these at their boundary; the gateway renders them in one place.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The wire shape of an error: ``{"code", "message", "retryable"}``."""

    code: str
    message: str
    retryable: bool
    retry_after_ms: int | None = None


class ConcordError(Exception):
    """Root of every error Concord reports to a client."""

    code: ClassVar[str] = "internal"
    retryable: ClassVar[bool] = False
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, **facts: Any) -> None:
        super().__init__(message)
        self.message = message
        self.facts = facts

    def body(self) -> ErrorBody:
        """This error in the wire shape of docs/protocol.md section 4.1."""
        return ErrorBody(code=self.code, message=self.message, retryable=self.retryable)


class BadMessage(ConcordError):
    code = "bad_message"
    http_status = 400


class InvalidOp(ConcordError):
    code = "invalid_op"
    http_status = 422


class UnknownEntityType(ConcordError):
    code = "unknown_entity_type"
    http_status = 422


class UnknownField(ConcordError):
    code = "unknown_field"
    http_status = 422


class TypeMismatch(ConcordError):
    code = "type_mismatch"
    http_status = 422


class TooLarge(ConcordError):
    code = "too_large"
    http_status = 413


class OpIdConflict(ConcordError):
    code = "op_id_conflict"
    http_status = 409


class DeviceMismatch(ConcordError):
    code = "device_mismatch"
    http_status = 422


class NotFound(ConcordError):
    code = "not_found"
    http_status = 404


class Forbidden(ConcordError):
    code = "forbidden"
    http_status = 403


class Conflict(ConcordError):
    code = "conflict"
    http_status = 409


class Unauthenticated(ConcordError):
    code = "unauthenticated"
    http_status = 401


class RefreshReused(ConcordError):
    code = "refresh_reused"
    http_status = 401


class AuthExpired(ConcordError):
    code = "auth_expired"
    retryable = True
    http_status = 401


class RateLimited(ConcordError):
    code = "rate_limited"
    retryable = True
    http_status = 429

    def __init__(self, message: str, *, retry_after_ms: int, **facts: Any) -> None:
        super().__init__(message, **facts)
        self.retry_after_ms = retry_after_ms

    def body(self) -> ErrorBody:
        return ErrorBody(
            code=self.code,
            message=self.message,
            retryable=True,
            retry_after_ms=self.retry_after_ms,
        )


class Unavailable(ConcordError):
    code = "unavailable"
    retryable = True
    http_status = 503


#: Every wire code, mapped to its class (for clients, docs and exhaustive tests).
ERRORS_BY_CODE: dict[str, type[ConcordError]] = {
    cls.code: cls
    for cls in (
        BadMessage,
        InvalidOp,
        UnknownEntityType,
        UnknownField,
        TypeMismatch,
        TooLarge,
        OpIdConflict,
        DeviceMismatch,
        NotFound,
        Forbidden,
        Conflict,
        Unauthenticated,
        RefreshReused,
        AuthExpired,
        RateLimited,
        Unavailable,
    )
}


def error_for_code(code: str, message: str) -> ConcordError:
    """Build the error of a wire ``code`` (used to turn a crdt ``Violation`` into an error)."""
    return ERRORS_BY_CODE[code](message)


def render(error: ConcordError) -> bytes:
    """The one renderer: ``{"error": {...}}`` as JSON bytes."""
    return _ENCODER.encode({"error": error.body()})


_ENCODER = msgspec.json.Encoder()
