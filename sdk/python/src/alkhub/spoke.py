"""Spokes: peers that offer operations to the hub and stay connected.

A :class:`Spoke` declares its operations in every ``hello``, so after a lost
connection (a hub restart, a network failure, a heartbeat timeout) it
reconnects with :class:`Backoff` and is serving them again. It stops for
good, and :meth:`Spoke.wait_closed` raises why, when the hub rejects its
token (close 4401) or a newer session of the same spoke takes over (4409):
reconnecting would fail again, or take the newer session over in turn.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

from .errors import (
    CLOSE_SUPERSEDED,
    CLOSE_UNAUTHENTICATED,
    ConnectionClosedError,
    HubError,
    ProtocolError,
    UnauthenticatedError,
    closed_error,
)
from .frames import Welcome
from .operations import AccessLevel, Handler, Operation, OperationType, Schema, define
from .transport import Dialer, Session, ws_url

logger = logging.getLogger("alkhub")

H = TypeVar("H", bound=Handler)


@dataclass(frozen=True)
class Backoff:
    """Delays between reconnection attempts: exponential, with jitter.

    Attempt ``n`` (from 0) of a series waits ``min(maximum, initial *
    multiplier**n)`` seconds, shortened by a random fraction of up to
    ``jitter``, so spokes cut off together (a hub restart) do not all come
    back in the same instant. A series starts again from ``initial`` once a
    connection has lasted ``stable_after`` seconds.
    """

    initial: float = 0.25
    maximum: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.25
    stable_after: float = 5.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt`` (0-based) of a series."""
        base = min(self.maximum, self.initial * self.multiplier ** min(attempt, 64))
        return base * (1.0 - self.jitter * random.random())


class Spoke:
    """A spoke: declares operations, serves their calls, reconnects.

    ::

        spoke = Spoke("http://127.0.0.1:7700", "alk_spoke_...")

        @spoke.query("demo.echo")
        async def echo(input, ctx):
            return input

        await spoke.start()
        await spoke.wait_closed()

    ``url`` is the hub's HTTP base URL (the WebSocket URL
    ``/v1/spokes/connect`` is derived from it) or a ``ws(s)://`` URL.
    ``reconnect`` sets the backoff; ``None`` disables reconnection.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        reconnect: Backoff | None = Backoff(),
        open_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
    ) -> None:
        self._dialer = Dialer(
            url=ws_url(url, "spokes"),
            token=token,
            name=name,
            labels=labels,
            open_timeout=open_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
        )
        self._reconnect = reconnect
        self._operations: dict[str, Operation] = {}
        self._session: Session | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._started = False
        self._done = asyncio.Event()
        self._error: HubError | None = None
        self._close_code: int | None = None
        self._close_reason = ""
        self._reconnects = 0

    # -- declaring ------------------------------------------------------------

    def operation(
        self,
        operation_id: str,
        type: OperationType,
        handler: Handler,
        *,
        description: str | None = None,
        input_schema: Schema | None = None,
        output_schema: Schema | None = None,
        access: AccessLevel = "authenticated",
        required_scopes: Sequence[str] = (),
    ) -> Operation:
        """Declares an operation served by ``handler``; call before :meth:`start`.

        Queries and mutations: ``async def handler(input, ctx) -> result``.
        Subscriptions: an async generator ``async def handler(input, ctx)``
        that yields each result. ``input_schema`` and ``output_schema`` are
        JSON Schema dicts or pydantic model classes. Raise :class:`HubError`
        to answer with a code; any other exception is an ``EXECUTION_ERROR``.
        """
        if self._started:
            raise RuntimeError("declare operations before start()")
        op = define(
            operation_id,
            type,
            handler,
            description=description,
            input_schema=input_schema,
            output_schema=output_schema,
            access=access,
            required_scopes=required_scopes,
        )
        if op.id in self._operations:
            raise ValueError(f"operation {op.id} is already declared")
        self._operations[op.id] = op
        return op

    def query(self, operation_id: str, **options: object) -> Callable[[H], H]:
        """Decorator form of :meth:`operation` for a query."""
        return self._decorator(operation_id, "query", options)

    def mutation(self, operation_id: str, **options: object) -> Callable[[H], H]:
        """Decorator form of :meth:`operation` for a mutation."""
        return self._decorator(operation_id, "mutation", options)

    def subscription(self, operation_id: str, **options: object) -> Callable[[H], H]:
        """Decorator form of :meth:`operation` for a subscription (an async generator)."""
        return self._decorator(operation_id, "subscription", options)

    def _decorator(
        self, operation_id: str, type: OperationType, options: dict[str, object]
    ) -> Callable[[H], H]:
        def register(handler: H) -> H:
            self.operation(operation_id, type, handler, **options)  # type: ignore[arg-type]
            return handler

        return register

    # -- running --------------------------------------------------------------

    async def start(self) -> Welcome:
        """Connects and declares the operations; returns the hub's ``welcome``.

        The first connection is tried once and its failure raised (a wrong
        URL or token should not hide in a retry loop); later losses are
        reconnected in the background.
        """
        if self._started:
            raise RuntimeError("start() was already called")
        self._started = True
        try:
            self._session = await self._open()
        except HubError as e:
            self._close_code = e.close_code
            self._finish(e)
            raise
        self._supervisor = asyncio.create_task(self._supervise(), name="alkhub spoke")
        return self._session.welcome

    async def wait_closed(self) -> None:
        """Waits until the spoke stops for good.

        Returns after :meth:`close`; raises :class:`UnauthenticatedError`
        (4401), :class:`~alkhub.errors.SupersededError` (4409) or, with
        reconnection disabled, the error that ended the connection.
        """
        await self._done.wait()
        if self._error is not None:
            raise self._error

    async def close(self) -> None:
        """Closes the connection and stops reconnecting; open calls are cancelled."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            try:
                await self._supervisor
            except asyncio.CancelledError:
                pass
        if self._session is not None:
            await self._session.close()
            self._close_code, self._close_reason = await self._session.wait_ended()
        self._finish(None)

    async def __aenter__(self) -> Spoke:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def welcome(self) -> Welcome | None:
        """The ``welcome`` of the latest session: registrations and rejections."""
        return self._session.welcome if self._session is not None else None

    @property
    def connected(self) -> bool:
        """Whether a session is open now."""
        return self._session is not None and self._session.open

    @property
    def closed(self) -> bool:
        """Whether the spoke has stopped for good."""
        return self._done.is_set()

    @property
    def close_code(self) -> int | None:
        """The close code of the latest session that ended, if any."""
        return self._close_code

    @property
    def close_reason(self) -> str:
        """The close reason of the latest session that ended."""
        return self._close_reason

    @property
    def reconnects(self) -> int:
        """How many times the spoke reconnected after losing a session."""
        return self._reconnects

    @property
    def operations(self) -> Mapping[str, Operation]:
        """The declared operations by id."""
        return self._operations

    async def _open(self) -> Session:
        session = await self._dialer.open(self._operations)
        for rejection in session.welcome.rejected:
            logger.warning(
                "the hub rejected %s: %s %s",
                rejection.operation_id,
                rejection.code,
                rejection.message,
            )
        return session

    async def _supervise(self) -> None:
        """Runs :meth:`_follow`; a failure of its own stops the spoke, never silently."""
        try:
            await self._follow()
        except Exception as e:
            logger.exception("the spoke stopped on an unexpected error")
            self._finish(ConnectionClosedError(f"the spoke stopped: {e!r}"))

    async def _follow(self) -> None:
        """Waits for each session's end and opens the next one."""
        assert self._session is not None
        loop = asyncio.get_running_loop()
        attempt = 0  # in the current series of attempts
        opened = loop.time()
        while True:
            code, reason = await self._session.wait_ended()
            self._close_code, self._close_reason = code, reason
            if code in (CLOSE_UNAUTHENTICATED, CLOSE_SUPERSEDED) or self._reconnect is None:
                self._finish(closed_error(code, reason))
                return
            logger.warning("the hub closed the connection (%s %s); reconnecting", code, reason)
            if loop.time() - opened >= self._reconnect.stable_after:
                attempt = 0
            while True:
                await asyncio.sleep(self._reconnect.delay(attempt))
                attempt += 1
                try:
                    self._session = await self._open()
                    break
                except (UnauthenticatedError, ProtocolError) as e:
                    # The same hello would fail the same way every time.
                    self._close_code = e.close_code
                    self._finish(e)
                    return
                except HubError as e:
                    logger.info("reconnect attempt %d failed: %s", attempt, e)
            opened = loop.time()
            self._reconnects += 1

    def _finish(self, error: HubError | None) -> None:
        if not self._done.is_set():
            self._error = error
            self._done.set()
