"""alkhub: spokes that serve operations through an alkhub hub, and clients that call them.

- :class:`Spoke` declares operations and serves them, reconnecting when the
  connection is lost.
- :class:`Client` calls operations over WebSocket; :class:`HttpClient`
  (``alkhub.http``, needs the ``http`` extra) over HTTP.
- Errors are :class:`HubError` subclasses, one per protocol code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .client import Client
from .errors import (
    AbortedError,
    AccessDeniedError,
    AlreadyRegisteredError,
    ConnectionClosedError,
    ConnectionFailedError,
    ExecutionError,
    HubError,
    HubTimeoutError,
    NoProviderError,
    OperationNotFoundError,
    OverloadedError,
    ProtocolError,
    ProviderGoneError,
    RoutingError,
    SupersededError,
    UnauthenticatedError,
    UnknownError,
    ValidationError,
    error_for,
)
from .frames import Principal, Registration, Rejection, Welcome
from .operations import Operation
from .spoke import Backoff, Spoke
from .transport import CallContext

if TYPE_CHECKING:
    from .http import HttpClient

__version__ = "0.1.0"

__all__ = [
    "AbortedError",
    "AccessDeniedError",
    "AlreadyRegisteredError",
    "Backoff",
    "CallContext",
    "Client",
    "ConnectionClosedError",
    "ConnectionFailedError",
    "ExecutionError",
    "HttpClient",
    "HubError",
    "HubTimeoutError",
    "NoProviderError",
    "Operation",
    "OperationNotFoundError",
    "OverloadedError",
    "Principal",
    "ProtocolError",
    "ProviderGoneError",
    "Registration",
    "Rejection",
    "RoutingError",
    "Spoke",
    "SupersededError",
    "UnauthenticatedError",
    "UnknownError",
    "ValidationError",
    "Welcome",
    "error_for",
]


def __getattr__(name: str) -> Any:
    # HttpClient needs the optional httpx: import it only when asked for.
    if name == "HttpClient":
        from .http import HttpClient

        return HttpClient
    raise AttributeError(f"module 'alkhub' has no attribute {name!r}")
