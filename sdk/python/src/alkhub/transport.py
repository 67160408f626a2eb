"""One WebSocket session with the hub, as a spoke or a client.

:class:`Dialer` opens a session: it connects, sends ``hello`` and waits for
``welcome`` (§2). A :class:`Session` then reads frames in one task and writes
them in another (frames are queued, so aborts can be sent from synchronous
code and order is kept), serves the calls the hub delivers with the
operations' handlers, and correlates the calls it makes. Reconnection is the
:class:`~alkhub.spoke.Spoke`'s business, not this module's.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from . import frames
from .errors import (
    CLOSE_UNAUTHENTICATED,
    ConnectionFailedError,
    HubError,
    UnauthenticatedError,
    UnknownError,
    closed_error,
    error_for,
    error_from_payload,
)
from .frames import Principal, Welcome
from .operations import Operation, to_json

logger = logging.getLogger("alkhub")

# Larger than anything the hub forwards (its frames are capped at
# limits.max_frame_bytes, 1 MiB by default, plus the envelope it adds).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Queued outbound frames past which a subscription's source waits for the writer.
OUTBOUND_HIGH_WATER = 256


def ws_url(url: str, endpoint: str) -> str:
    """The WebSocket URL of ``endpoint`` (``spokes`` or ``clients``) of a hub.

    An ``http(s)://`` base URL gets the ``ws(s)`` scheme and the path
    ``/v1/<endpoint>/connect``; a ``ws(s)://`` URL is used as given.
    """
    parts = urlsplit(url)
    if parts.scheme in ("ws", "wss"):
        return url
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"expected an http(s) or ws(s) URL, got {url!r}")
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path.rstrip("/") + f"/v1/{endpoint}/connect"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


class _Completed:
    """The event of a ``call.completed``."""


_COMPLETED = _Completed()


@dataclass(frozen=True)
class _Responded:
    """The event of a ``call.responded``: the envelope's data."""

    data: Any


_Event = _Responded | _Completed | HubError


class CallContext:
    """What a handler knows about the call it serves, and how it calls others.

    Calls made through :meth:`call` and :meth:`subscribe` name this call as
    their parent (``parentRequestId``), so the hub aborts them when this call
    ends early (§4.8).
    """

    def __init__(self, session: Session, payload: frames.JsonObject) -> None:
        self._session = session
        #: The hub's id of this call (``h<number>``).
        self.request_id: str = payload["requestId"]
        #: The operation id as this peer declared it.
        self.operation_id: str = payload.get("operationId", "")
        #: Who calls: ``kind``, ``id``, ``scopes``.
        self.identity: Principal | None = Principal.from_payload(payload.get("identity"))
        #: The caller's routing metadata.
        self.metadata: dict[str, str] = dict(payload.get("metadata") or {})
        #: The hub id of the call this one serves, if its caller named one.
        self.parent_request_id: str | None = payload.get("parentRequestId")
        #: The caller's deadline, ms since the Unix epoch, if any.
        self.deadline: int | None = payload.get("deadline")

    async def call(
        self,
        operation_id: str,
        input: Any = None,
        *,
        timeout_ms: int | None = None,
        idle_timeout_ms: int | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Any:
        """Calls a query or mutation as a child of this call; returns its data."""
        return await self._session.call(
            operation_id,
            input,
            timeout_ms=timeout_ms,
            idle_timeout_ms=idle_timeout_ms,
            parent_request_id=self.request_id,
            metadata=metadata,
        )

    def subscribe(
        self,
        operation_id: str,
        input: Any = None,
        *,
        timeout_ms: int | None = None,
        idle_timeout_ms: int | None = None,
        metadata: dict[str, str] | None = None,
    ) -> AsyncGenerator[Any, None]:
        """Subscribes as a child of this call; yields each event's data."""
        return self._session.subscribe(
            operation_id,
            input,
            timeout_ms=timeout_ms,
            idle_timeout_ms=idle_timeout_ms,
            parent_request_id=self.request_id,
            metadata=metadata,
        )


@dataclass(frozen=True)
class Dialer:
    """How to open a session: the endpoint's URL, the ``hello`` fields and timeouts.

    ``ping_interval`` and ``ping_timeout`` (seconds, ``None`` to disable) set
    this side's keepalive pings; the hub's pings are always answered.
    """

    url: str
    token: str
    name: str | None = None
    labels: Mapping[str, str] | None = None
    open_timeout: float = 10.0
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0

    async def open(self, operations: Mapping[str, Operation]) -> Session:
        """Connects, declares ``operations`` in ``hello`` and returns the session.

        Raises :class:`UnauthenticatedError` for a bad token (close 4401),
        the error of an upgrade the hub refused (``OVERLOADED``, ...),
        :class:`ConnectionFailedError` when the hub cannot be reached and
        :class:`ConnectionClosedError` when it closes before ``welcome``.
        """
        try:
            ws = await connect(
                self.url,
                compression=None,
                max_size=MAX_MESSAGE_BYTES,
                open_timeout=self.open_timeout,
                ping_interval=self.ping_interval,
                ping_timeout=self.ping_timeout,
            )
        except InvalidStatus as e:
            raise _refused(e) from e
        except (OSError, InvalidHandshake, TimeoutError) as e:
            raise ConnectionFailedError(f"cannot connect to {self.url}: {e}") from e
        hello: frames.JsonObject = {
            "token": self.token,
            "operations": [op.spec() for op in operations.values()],
        }
        if self.name is not None:
            hello["name"] = self.name
        if self.labels:
            hello["labels"] = dict(self.labels)
        try:
            async with asyncio.timeout(self.open_timeout):
                await ws.send(frames.encode("hello", hello))
                welcome = await _await_welcome(ws)
        except ConnectionClosed:
            raise closed_error(ws.close_code or 1006, ws.close_reason or "") from None
        except TimeoutError:
            await ws.close()
            raise ConnectionFailedError(
                f"no welcome from {self.url} within {self.open_timeout} s"
            ) from None
        except BaseException:
            await ws.close()
            raise
        return Session(ws, welcome, operations)


async def _await_welcome(ws: ClientConnection) -> Welcome:
    """Reads frames until ``welcome``; an ``error`` before it fails the connect."""
    while True:
        try:
            text = await ws.recv()
        except ConnectionClosed:
            raise closed_error(ws.close_code or 1006, ws.close_reason or "") from None
        try:
            kind, payload = frames.decode(text) if isinstance(text, str) else ("", {})
        except ValueError:
            continue
        if kind == "welcome":
            return Welcome.from_payload(payload)
        if kind == "error":
            error = error_from_payload(payload)
            if isinstance(error, UnauthenticatedError):
                # The hub closes with 4401 right after; report that code.
                await ws.wait_closed()
                error.close_code = ws.close_code or CLOSE_UNAUTHENTICATED
            raise error


def _refused(e: InvalidStatus) -> HubError:
    """The error of an upgrade answered with an HTTP error (§1: 429, 500, 503)."""
    status = e.response.status_code
    try:
        body = json.loads(e.response.body or b"")
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        return error_for(body["code"], body.get("message") or "", body.get("details"))
    return UnknownError(f"the hub refused the WebSocket upgrade with HTTP {status}")


class Session:
    """A live session: serves calls with ``operations`` and makes calls."""

    def __init__(self, ws: ClientConnection, welcome: Welcome, operations: Mapping[str, Operation]):
        self._ws = ws
        #: The hub's ``welcome`` for this session.
        self.welcome = welcome
        self._operations = operations
        self._ids = itertools.count(1)
        self._calls: dict[str, asyncio.Queue[_Event]] = {}
        self._serving: dict[str, asyncio.Task[None]] = {}
        self._outbound: asyncio.Queue[str] = asyncio.Queue()
        self._ended: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self._writer = asyncio.create_task(self._write(), name="alkhub writer")
        self._reader = asyncio.create_task(self._read(), name="alkhub reader")

    @property
    def open(self) -> bool:
        """Whether the session is still open."""
        return not self._ended.done()

    async def wait_ended(self) -> tuple[int, str]:
        """Waits for the end of the session; returns the close code and reason."""
        return await asyncio.shield(self._ended)

    async def close(self) -> None:
        """Closes the session normally (code 1000) and waits for its end."""
        await self._ws.close()
        await self.wait_ended()

    # -- calls made by this peer ------------------------------------------

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
        """Calls an operation and returns the data of its result.

        Cancelling the awaiting task aborts the call (``call.aborted``).
        """
        request_id, events = self._start(
            operation_id, input, timeout_ms, idle_timeout_ms, parent_request_id, metadata
        )
        try:
            event = await events.get()
        except asyncio.CancelledError:
            self._abort(request_id)
            raise
        # A result ends a query or mutation at the hub: nothing to abort.
        self._calls.pop(request_id, None)
        if isinstance(event, HubError):
            raise event
        if isinstance(event, _Completed):
            raise error_for("EXECUTION_ERROR", "the call completed without a result")
        return event.data

    async def subscribe(
        self,
        operation_id: str,
        input: Any = None,
        *,
        timeout_ms: int | None = None,
        idle_timeout_ms: int | None = None,
        parent_request_id: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> AsyncGenerator[Any, None]:
        """Subscribes (the request goes out at the first iteration); yields each event's data.

        Ends at ``call.completed``; raises the call's error. Leaving the
        iteration early, ``aclose()`` or cancelling the task aborts the call.
        """
        request_id, events = self._start(
            operation_id, input, timeout_ms, idle_timeout_ms, parent_request_id, metadata
        )
        try:
            while True:
                event = await events.get()
                if isinstance(event, HubError):
                    raise event
                if isinstance(event, _Completed):
                    return
                yield event.data
        finally:
            self._abort(request_id)

    def _start(
        self,
        operation_id: str,
        input: Any,
        timeout_ms: int | None,
        idle_timeout_ms: int | None,
        parent_request_id: str | None,
        metadata: dict[str, str] | None,
    ) -> tuple[str, asyncio.Queue[_Event]]:
        if self._ended.done():
            raise closed_error(*self._ended.result())
        request_id = f"c-{next(self._ids)}"
        events: asyncio.Queue[_Event] = asyncio.Queue()
        self._calls[request_id] = events
        self._send(
            frames.call_requested(
                request_id,
                operation_id,
                to_json(input),
                parent_request_id=parent_request_id,
                timeout_ms=timeout_ms,
                idle_timeout_ms=idle_timeout_ms,
                metadata=metadata,
            )
        )
        return request_id, events

    def _abort(self, request_id: str) -> None:
        """Sends ``call.aborted`` for a call of this peer that is still open."""
        if self._calls.pop(request_id, None) is not None and not self._ended.done():
            self._send(frames.call_aborted(request_id))

    # -- calls served by this peer ------------------------------------------

    def _serve(self, payload: frames.JsonObject) -> None:
        request_id = payload.get("requestId")
        if not isinstance(request_id, str):
            return
        operation = self._operations.get(payload.get("operationId", ""))
        if operation is None:
            self._send(
                frames.call_error(
                    request_id,
                    "OPERATION_NOT_FOUND",
                    f"this peer does not serve {payload.get('operationId')!r}",
                )
            )
            return
        context = CallContext(self, payload)
        self._serving[request_id] = asyncio.create_task(
            self._run(operation, payload.get("input"), context),
            name=f"alkhub {operation.id} {request_id}",
        )

    async def _run(self, operation: Operation, raw_input: Any, context: CallContext) -> None:
        """Runs a handler; sends its answer unless the call was aborted meanwhile."""
        try:
            answer = await self._answer(operation, raw_input, context)
        finally:
            still_open = self._serving.pop(context.request_id, None) is not None
        if still_open:
            self._send(answer)

    async def _answer(self, operation: Operation, raw_input: Any, context: CallContext) -> str:
        request_id = context.request_id
        try:
            input = operation.load_input(raw_input)
            if operation.type == "subscription":
                await self._stream(operation, input, context)
                return frames.call_completed(request_id)
            result = operation.handler(input, context)
            if inspect.isawaitable(result):
                result = await result
            return frames.call_responded(request_id, {"data": to_json(result)})
        except HubError as e:
            return frames.call_error(request_id, e.code, e.message, e.details)
        except Exception as e:
            logger.warning("handler of %s failed", operation.id, exc_info=True)
            return frames.call_error(request_id, None, str(e) or type(e).__name__)

    async def _stream(self, operation: Operation, input: Any, context: CallContext) -> None:
        """Sends each item of a subscription's async iterator as a result."""
        source = operation.handler(input, context)
        if not hasattr(source, "__anext__"):
            raise TypeError(f"the handler of {operation.id} did not return an async iterator")
        try:
            async for item in source:
                self._send(frames.call_responded(context.request_id, {"data": to_json(item)}))
                if self._outbound.qsize() > OUTBOUND_HIGH_WATER:
                    await self._outbound.join()
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()

    # -- frames ------------------------------------------------------------

    def _send(self, text: str) -> None:
        self._outbound.put_nowait(text)

    async def _write(self) -> None:
        while True:
            text = await self._outbound.get()
            try:
                await self._ws.send(text)
            except ConnectionClosed:
                return
            finally:
                self._outbound.task_done()

    async def _read(self) -> None:
        try:
            async for message in self._ws:
                if isinstance(message, str):
                    self._dispatch(message)
        except ConnectionClosed:
            pass
        finally:
            self._end()

    def _dispatch(self, text: str) -> None:
        try:
            kind, payload = frames.decode(text)
        except ValueError as e:
            logger.warning("ignoring a frame from the hub: %s", e)
            return
        request_id = payload.get("requestId")
        if kind == "call.requested":
            self._serve(payload)
        elif kind == "call.aborted":
            task = self._serving.pop(request_id, None) if isinstance(request_id, str) else None
            if task is not None:
                task.cancel()
        elif kind in ("call.responded", "call.completed", "call.error"):
            events = self._calls.get(request_id) if isinstance(request_id, str) else None
            if events is None:
                return
            if kind == "call.responded":
                output = payload.get("output")
                events.put_nowait(_Responded(output.get("data") if isinstance(output, dict) else None))
                return
            del self._calls[request_id]  # type: ignore[arg-type]
            events.put_nowait(_COMPLETED if kind == "call.completed" else error_from_payload(payload))
        elif kind == "error":
            error = error_from_payload(payload)
            logger.warning("the hub reported %s: %s", error.code, error.message)

    def _end(self) -> None:
        """Fails the open calls and cancels the served ones once the socket closed."""
        code = self._ws.close_code or 1006
        reason = self._ws.close_reason or ""
        if not self._ended.done():
            self._ended.set_result((code, reason))
        for events in self._calls.values():
            events.put_nowait(closed_error(code, reason))
        self._calls.clear()
        for task in self._serving.values():
            task.cancel()
        self._serving.clear()
        self._writer.cancel()
