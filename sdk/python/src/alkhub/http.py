"""Calls over the hub's HTTP API (§5.2, §5.3); needs the ``http`` extra (httpx).

``POST /v1/operations/{id}/call`` answers with the response envelope or a
JSON error body; ``POST /v1/operations/{id}/subscribe`` answers with a
``text/event-stream`` of ``responded`` events closed by ``completed`` or
``error``, parsed here by hand. Errors raise the same classes as over
WebSocket.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

from .errors import (
    ConnectionClosedError,
    ConnectionFailedError,
    HubError,
    UnknownError,
    error_from_payload,
)
from .operations import to_json

try:
    import httpx
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("alkhub.http needs httpx: pip install 'alkhub[http]'") from e


@dataclass(frozen=True)
class SseEvent:
    """One server-sent event: its ``event`` name and its ``data`` text."""

    event: str
    data: str


async def parse_sse(lines: AsyncIterable[str]) -> AsyncGenerator[SseEvent, None]:
    """The events of a ``text/event-stream`` given line by line (without line ends).

    Follows the HTML standard's rules: ``field: value`` lines (one optional
    space after the colon), ``data`` lines joined with newlines, comments
    (``:``) ignored, an event dispatched at each blank line and dropped when
    it has no data; the event name defaults to ``message``.
    """
    event = ""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield SseEvent(event or "message", "\n".join(data))
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)


class HttpClient:
    """Calls operations over HTTP.

    ::

        async with HttpClient("http://127.0.0.1:7700", "alk_client_...") as http:
            print(await http.call("demo.echo", {"hello": "world"}))
            async for event in http.subscribe("demo.ticks", {"count": 3}):
                print(event)

    Without ``token`` calls are anonymous (``public`` operations only).
    ``connect_timeout`` bounds connecting; how long a call may take is the
    hub's ``timeoutMs`` (``limits.default_http_timeout_ms`` when not given).
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:7700",
        token: str | None = None,
        *,
        connect_timeout: float = 10.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(None, connect=connect_timeout),
        )

    async def call(
        self,
        operation_id: str,
        input: Any = None,
        *,
        timeout_ms: int | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Any:
        """Calls an operation (``/call``); returns the ``data`` of its result."""
        try:
            response = await self._http.post(
                _path(operation_id, "call"), json=_body(input, timeout_ms, metadata)
            )
        except httpx.TransportError as e:
            raise ConnectionFailedError(f"cannot reach the hub: {e}") from e
        if response.status_code != 200:
            raise _error_of(response.status_code, response.content)
        envelope = response.json()
        return envelope.get("data") if isinstance(envelope, dict) else None

    async def subscribe(
        self,
        operation_id: str,
        input: Any = None,
        *,
        timeout_ms: int | None = None,
        metadata: dict[str, str] | None = None,
    ) -> AsyncGenerator[Any, None]:
        """Subscribes (``/subscribe``, server-sent events); yields each result's ``data``.

        The request goes out at the first iteration. Leaving the iteration
        early or ``aclose()`` closes the stream, which aborts the call.
        """
        request = self._http.build_request(
            "POST",
            _path(operation_id, "subscribe"),
            json=_body(input, timeout_ms, metadata),
            headers={"Accept": "text/event-stream"},
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as e:
            raise ConnectionFailedError(f"cannot reach the hub: {e}") from e
        try:
            if response.status_code != 200:
                raise _error_of(response.status_code, await response.aread())
            async for event in parse_sse(response.aiter_lines()):
                if event.event == "responded":
                    envelope = json.loads(event.data)
                    yield envelope.get("data") if isinstance(envelope, dict) else None
                elif event.event == "completed":
                    return
                elif event.event == "error":
                    raise error_from_payload(json.loads(event.data))
            raise ConnectionClosedError("the event stream ended without completed or error")
        except httpx.TransportError as e:
            raise ConnectionClosedError(f"the event stream broke: {e}") from e
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        """Closes the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _path(operation_id: str, action: str) -> str:
    return f"/v1/operations/{quote(operation_id, safe='')}/{action}"


def _body(input: Any, timeout_ms: int | None, metadata: dict[str, str] | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if input is not None:
        body["input"] = to_json(input)
    if timeout_ms is not None:
        body["timeoutMs"] = max(0, int(timeout_ms))
    if metadata:
        body["metadata"] = dict(metadata)
    return body


def _error_of(status: int, content: bytes) -> HubError:
    """The error of a non-200 answer: its JSON body ``{code, message, details?}``."""
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        return error_from_payload(body)
    return UnknownError(f"HTTP {status}: {content[:200]!r}", {"status": status})
