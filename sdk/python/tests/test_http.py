"""C15: the HTTP helpers (``/call`` and the server-sent events of ``/subscribe``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import Peers
from helpers import wait

from alkhub import (
    CallContext,
    HubError,
    HubTimeoutError,
    OperationNotFoundError,
    Spoke,
    UnauthenticatedError,
    ValidationError,
)
from alkhub.http import HttpClient, SseEvent, parse_sse


async def serve_demo(spoke: Spoke, stopped: asyncio.Event) -> None:
    @spoke.query("demo.echo", access="public")
    async def echo(input: Any, ctx: CallContext) -> Any:
        return input

    @spoke.query("demo.private")
    async def private(input: Any, ctx: CallContext) -> Any:
        assert ctx.identity is not None
        return {"caller": ctx.identity.id}

    @spoke.query("demo.fail")
    async def fail(input: Any, ctx: CallContext) -> None:
        raise HubError("QUOTA_EXCEEDED", "no more today", {"limit": 10})

    @spoke.subscription(
        "demo.ticks",
        input_schema={"type": "object", "properties": {"count": {"type": "integer"}}},
    )
    async def ticks(input: dict[str, int], ctx: CallContext) -> AsyncIterator[dict[str, int]]:
        for i in range(1, input.get("count", 5) + 1):
            yield {"tick": i}

    @spoke.subscription("demo.stall")
    async def stall(input: Any, ctx: CallContext) -> AsyncIterator[int]:
        try:
            yield 1
            await asyncio.sleep(3600)
        finally:
            stopped.set()

    await wait(spoke.start())


async def test_c15_http_call_and_subscribe(peers: Peers) -> None:
    await serve_demo(await peers.spoke("edge"), asyncio.Event())
    token = await peers.client_token("app")
    async with HttpClient(peers.hub.http_url, token) as http:
        assert await wait(http.call("demo.echo", {"hello": "world"})) == {"hello": "world"}
        assert await wait(http.call("demo.private")) == {"caller": "app"}

        async def collect() -> list[Any]:
            return [event async for event in http.subscribe("demo.ticks", {"count": 4})]

        assert await wait(collect()) == [{"tick": i} for i in range(1, 5)]
        # A query read as a stream is one event.
        assert [e async for e in http.subscribe("demo.echo", {"once": True})] == [{"once": True}]

    # Anonymous: a public operation works, others are UNAUTHENTICATED.
    async with HttpClient(peers.hub.http_url) as anonymous:
        assert await wait(anonymous.call("demo.echo", 5)) == 5
        with pytest.raises(UnauthenticatedError):
            await wait(anonymous.call("demo.private"))


async def test_c15_http_errors_are_typed_as_over_websocket(peers: Peers) -> None:
    stopped = asyncio.Event()
    await serve_demo(await peers.spoke("edge"), stopped)
    token = await peers.client_token("app")
    async with HttpClient(peers.hub.http_url, token) as http:
        with pytest.raises(OperationNotFoundError):
            await wait(http.call("demo.missing"))
        with pytest.raises(OperationNotFoundError):
            await wait(anext(http.subscribe("demo.missing")))

        with pytest.raises(ValidationError) as invalid:
            await wait(anext(http.subscribe("demo.ticks", {"count": "three"})))
        assert invalid.value.details["errors"][0]["instancePath"] == "/count"

        with pytest.raises(HubError) as domain:
            await wait(http.call("demo.fail"))
        assert type(domain.value) is HubError
        assert (domain.value.code, domain.value.message, domain.value.details) == (
            "QUOTA_EXCEEDED", "no more today", {"limit": 10},
        )

        # A timeout after the stream started arrives as an `error` event.
        received = []
        with pytest.raises(HubTimeoutError):
            async for event in http.subscribe("demo.stall", timeout_ms=500):
                received.append(event)
        assert received == [1]
        await wait(stopped.wait())

    async with HttpClient(peers.hub.http_url, "alk_client_not-a-token") as bad:
        with pytest.raises(UnauthenticatedError):
            await wait(bad.call("demo.echo", 1))


async def test_c15_closing_the_event_stream_aborts_the_call(peers: Peers) -> None:
    stopped = asyncio.Event()
    await serve_demo(await peers.spoke("edge"), stopped)
    async with HttpClient(peers.hub.http_url, await peers.client_token("app")) as http:
        events = http.subscribe("demo.stall")
        assert await wait(anext(events)) == 1
        await events.aclose()
        await wait(stopped.wait())


async def test_sse_parser_follows_the_event_stream_format() -> None:
    async def lines() -> AsyncIterator[str]:
        for line in [
            ": a comment",
            "event: responded",
            'data: {"data":',
            "data:1}",
            "",
            "",
            "event:completed",
            "data: {}",
            "",
            "data: no event name",
            "",
            "event: dropped without data",
            "",
        ]:
            yield line

    events = [event async for event in parse_sse(lines())]
    assert events == [
        SseEvent("responded", '{"data":\n1}'),
        SseEvent("completed", "{}"),
        SseEvent("message", "no event name"),
    ]
