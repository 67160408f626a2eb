"""Clients: peers that call operations through the hub over WebSocket.

A :class:`Client` holds one session. It does not reconnect: when the
connection ends, open calls fail with
:class:`~alkhub.errors.ConnectionClosedError` and the next call raises it;
make a new client to go on.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from types import TracebackType
from typing import Any

from .errors import closed_error
from .frames import Welcome
from .transport import Dialer, Session, ws_url


class Client:
    """A client of the hub.

    ::

        async with Client("http://127.0.0.1:7700", "alk_client_...") as client:
            print(await client.call("demo.echo", {"hello": "world"}))
            async for event in client.subscribe("demo.ticks", {"count": 3}):
                print(event)

    ``url`` is the hub's HTTP base URL (the WebSocket URL
    ``/v1/clients/connect`` is derived from it) or a ``ws(s)://`` URL.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        open_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
    ) -> None:
        self._dialer = Dialer(
            url=ws_url(url, "clients"),
            token=token,
            name=name,
            labels=labels,
            open_timeout=open_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
        )
        self._session: Session | None = None
        self._closed_by_us = False

    async def connect(self) -> Welcome:
        """Connects and returns the hub's ``welcome``.

        Raises :class:`~alkhub.errors.UnauthenticatedError` for a bad token
        (close 4401) and :class:`~alkhub.errors.ConnectionFailedError` when
        the hub cannot be reached.
        """
        if self._session is not None:
            raise RuntimeError("connect() was already called")
        self._session = await self._dialer.open({})
        return self._session.welcome

    async def call(
        self,
        operation_id: str,
        input: Any = None,
        *,
        timeout_ms: int | None = None,
        idle_timeout_ms: int | None = None,
        parent_request_id: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Any:
        """Calls a query or mutation; returns the ``data`` of its result.

        ``timeout_ms`` becomes the call's ``deadline``, ``idle_timeout_ms``
        its ``idleTimeout``; ``parent_request_id`` names the call this one
        serves. Failures raise the :class:`~alkhub.errors.HubError` subclass
        of their code. Cancelling the awaiting task aborts the call.
        """
        return await self._require_session().call(
            operation_id,
            input,
            timeout_ms=timeout_ms,
            idle_timeout_ms=idle_timeout_ms,
            parent_request_id=parent_request_id,
            metadata=metadata,
        )

    def subscribe(
        self,
        operation_id: str,
        input: Any = None,
        *,
        timeout_ms: int | None = None,
        idle_timeout_ms: int | None = None,
        parent_request_id: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> AsyncGenerator[Any, None]:
        """Subscribes; an async iterator of each result's ``data``.

        The request is sent at the first iteration. The iteration ends at the
        stream's completion and raises the call's error; leaving it early,
        ``aclose()`` or cancelling the task aborts the call.
        """
        return self._require_session().subscribe(
            operation_id,
            input,
            timeout_ms=timeout_ms,
            idle_timeout_ms=idle_timeout_ms,
            parent_request_id=parent_request_id,
            metadata=metadata,
        )

    @property
    def welcome(self) -> Welcome | None:
        """The hub's ``welcome``, once connected."""
        return self._session.welcome if self._session is not None else None

    @property
    def connected(self) -> bool:
        """Whether the session is open."""
        return self._session is not None and self._session.open

    async def close(self) -> None:
        """Closes the connection; open calls fail with ``ConnectionClosedError``."""
        self._closed_by_us = True
        if self._session is not None:
            await self._session.close()

    async def wait_closed(self) -> None:
        """Waits until the connection ends; raises why unless :meth:`close` ended it."""
        session = self._require_session()
        code, reason = await session.wait_ended()
        if not self._closed_by_us:
            raise closed_error(code, reason)

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _require_session(self) -> Session:
        if self._session is None:
            raise RuntimeError("call connect() first")
        return self._session
