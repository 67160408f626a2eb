"""Errors of calls and connections, one class per protocol code.

Every error the hub or a provider reports carries a `code`, a `message` and
optional `details` (protocol §4.9). :func:`error_for` turns them into the
class of that code; a code outside the protocol's table (a provider's domain
code such as ``DISK_FULL``) stays a plain :class:`HubError` with that code.
Handlers raise :class:`HubError` (or a subclass) to answer with a code.
"""

from __future__ import annotations

from typing import Any, ClassVar


class HubError(Exception):
    """A failed call or connection: the protocol ``code``, ``message`` and ``details``.

    ``close_code`` is the WebSocket close code when the error ended a
    connection (4401, 4409, ...), otherwise ``None``.
    """

    def __init__(
        self,
        code: str,
        message: str = "",
        details: Any = None,
        *,
        close_code: int | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message
        self.details = details
        self.close_code = close_code

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, "
            f"details={self.details!r})"
        )


class _CodedError(HubError):
    """A :class:`HubError` whose class fixes the code."""

    CODE: ClassVar[str]

    def __init__(
        self, message: str = "", details: Any = None, *, close_code: int | None = None
    ) -> None:
        super().__init__(self.CODE, message, details, close_code=close_code)


class OperationNotFoundError(_CodedError):
    """No operation with that id is visible to the caller."""

    CODE = "OPERATION_NOT_FOUND"


class NoProviderError(_CodedError):
    """The operation exists but no provider serves it now."""

    CODE = "NO_PROVIDER"


class UnauthenticatedError(_CodedError):
    """The token is missing, unknown, of the wrong kind, or was revoked."""

    CODE = "UNAUTHENTICATED"


class AccessDeniedError(_CodedError):
    """The caller lacks a scope the operation requires."""

    CODE = "ACCESS_DENIED"


class ValidationError(_CodedError):
    """The input does not match the input schema; ``details["errors"]`` says where."""

    CODE = "VALIDATION_ERROR"


class HubTimeoutError(_CodedError):
    """The call's deadline or idle timeout passed (protocol code ``TIMEOUT``)."""

    CODE = "TIMEOUT"


class AbortedError(_CodedError):
    """The call was aborted: by its provider, its parent ending, or hub shutdown."""

    CODE = "ABORTED"


class ProviderGoneError(_CodedError):
    """The provider disconnected before it answered."""

    CODE = "PROVIDER_GONE"


class OverloadedError(_CodedError):
    """A configured limit of the hub was hit."""

    CODE = "OVERLOADED"


class RoutingError(_CodedError):
    """The routing policy refused the call or failed."""

    CODE = "ROUTING_ERROR"


class AlreadyRegisteredError(_CodedError):
    """Another live session of the same principal provides the operation."""

    CODE = "ALREADY_REGISTERED"


class ExecutionError(_CodedError):
    """The provider failed without a more specific code."""

    CODE = "EXECUTION_ERROR"


class ProtocolError(_CodedError):
    """A malformed or out-of-order frame or request."""

    CODE = "PROTOCOL_ERROR"


class UnknownError(_CodedError):
    """Anything else, such as a call started while the hub shuts down."""

    CODE = "UNKNOWN_ERROR"


class ConnectionFailedError(_CodedError):
    """The connection to the hub could not be opened (no protocol code: this library's)."""

    CODE = "CONNECTION_FAILED"


class ConnectionClosedError(_CodedError):
    """The connection to the hub ended; ``close_code`` says how (this library's code)."""

    CODE = "CONNECTION_CLOSED"


class SupersededError(ConnectionClosedError):
    """A newer session of the same spoke took over (close code 4409)."""


_BY_CODE: dict[str, type[_CodedError]] = {
    cls.CODE: cls
    for cls in (
        OperationNotFoundError,
        NoProviderError,
        UnauthenticatedError,
        AccessDeniedError,
        ValidationError,
        HubTimeoutError,
        AbortedError,
        ProviderGoneError,
        OverloadedError,
        RoutingError,
        AlreadyRegisteredError,
        ExecutionError,
        ProtocolError,
        UnknownError,
    )
}

CLOSE_UNAUTHENTICATED = 4401
CLOSE_SUPERSEDED = 4409


def error_for(code: str, message: str = "", details: Any = None) -> HubError:
    """The error of class ``code`` names; a domain code gives a plain :class:`HubError`."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return HubError(code, message, details)
    return cls(message, details)


def error_from_payload(payload: Any) -> HubError:
    """The error a ``call.error`` or ``error`` payload (or an HTTP error body) describes."""
    if not isinstance(payload, dict):
        return UnknownError(f"unreadable error: {payload!r}")
    code = payload.get("code")
    message = payload.get("message")
    return error_for(
        code if isinstance(code, str) else "UNKNOWN_ERROR",
        message if isinstance(message, str) else "",
        payload.get("details"),
    )


def closed_error(close_code: int, reason: str) -> HubError:
    """The error that a connection closed with ``close_code`` and ``reason`` stands for."""
    message = reason or f"the connection to the hub closed with code {close_code}"
    if close_code == CLOSE_UNAUTHENTICATED:
        return UnauthenticatedError(message, close_code=close_code)
    if close_code == CLOSE_SUPERSEDED:
        return SupersededError(message, close_code=close_code)
    return ConnectionClosedError(message, close_code=close_code)
