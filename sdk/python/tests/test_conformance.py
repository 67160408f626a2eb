"""The peer conformance scenarios C01-C14 of sdk/conformance.md, against a real hub.

(C15, HTTP, is in test_http.py.)
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import struct
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import Peers
from helpers import FAST, eventually, wait
from hubproc import Hub

from alkhub import (
    AbortedError,
    AccessDeniedError,
    Backoff,
    CallContext,
    Client,
    ExecutionError,
    HubError,
    HubTimeoutError,
    NoProviderError,
    OperationNotFoundError,
    Spoke,
    SupersededError,
    UnauthenticatedError,
    ValidationError,
)


class Probe:
    """What a handler went through: started, cancelled, finished."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.finished = asyncio.Event()
        self.contexts: list[CallContext] = []

    async def hold(self, ctx: CallContext) -> None:
        """Records the call, then waits until cancelled."""
        self.contexts.append(ctx)
        self.started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        finally:
            self.finished.set()


# -- C01 connect -----------------------------------------------------------------


async def test_c01_connect_spoke_and_client_see_welcome(peers: Peers) -> None:
    spoke = await peers.spoke("edge")
    welcome = await wait(spoke.start())
    assert welcome.session_id.isdigit()
    assert welcome.heartbeat_ms == 15000
    assert welcome.principal is not None
    assert (welcome.principal.kind, welcome.principal.id) == ("spoke", "edge")
    assert spoke.connected

    client = await peers.client("app", ("ops",))
    assert client.welcome is not None
    assert client.welcome.session_id.isdigit()
    assert client.welcome.session_id != welcome.session_id
    assert client.welcome.heartbeat_ms == 15000
    assert client.welcome.principal is not None
    assert client.welcome.principal.kind == "client"
    assert client.welcome.principal.scopes == ("ops",)


async def test_c01_wrong_token_fails_with_4401_and_no_retry(hub: Hub, peers: Peers) -> None:
    spoke = Spoke(hub.http_url, "alk_spoke_" + "0" * 64, reconnect=FAST)
    with pytest.raises(UnauthenticatedError) as raised:
        await wait(spoke.start())
    assert raised.value.code == "UNAUTHENTICATED"
    assert raised.value.close_code == 4401
    # No retry loop: the spoke has stopped for good and says why.
    assert spoke.closed and not spoke.connected
    await asyncio.sleep(1.0)
    assert spoke.reconnects == 0
    with pytest.raises(UnauthenticatedError):
        await wait(spoke.wait_closed())

    client = Client(hub.http_url, "alk_client_not-a-token")
    with pytest.raises(UnauthenticatedError) as raised:
        await wait(client.connect())
    assert raised.value.close_code == 4401

    # A valid spoke token is not a client token.
    wrong_kind = Client(hub.http_url, await peers.spoke_token("edge"))
    with pytest.raises(UnauthenticatedError):
        await wait(wrong_kind.connect())


# -- C02 declare -----------------------------------------------------------------


async def test_c02_declare_operations_with_schemas_description_and_access(peers: Peers) -> None:
    spoke = await peers.spoke("edge")
    schemas: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
        "inv.get": (
            {"type": "object", "properties": {"sku": {"type": "string"}}, "required": ["sku"]},
            {"type": "object", "properties": {"count": {"type": "integer"}}},
        ),
        "inv.set": (
            {"type": "object", "properties": {"count": {"type": "integer", "minimum": 0}}},
            {"type": "boolean"},
        ),
        "inv.watch": ({"type": "object"}, {"type": "integer"}),
    }

    async def handler(input: Any, ctx: CallContext) -> Any:
        return None

    async def stream(input: Any, ctx: CallContext) -> AsyncIterator[int]:
        yield 1

    spoke.operation(
        "inv.get", "query", handler, description="Reads a count.",
        input_schema=schemas["inv.get"][0], output_schema=schemas["inv.get"][1], access="public",
    )
    spoke.operation(
        "inv.set", "mutation", handler, description="Sets a count.",
        input_schema=schemas["inv.set"][0], output_schema=schemas["inv.set"][1],
        access="scoped", required_scopes=["ops"],
    )
    spoke.operation(
        "inv.watch", "subscription", stream, description="Streams counts.",
        input_schema=schemas["inv.watch"][0], output_schema=schemas["inv.watch"][1],
    )
    welcome = await wait(spoke.start())
    assert sorted(r.operation_id for r in welcome.registrations) == sorted(schemas)
    assert welcome.rejected == ()

    client = await peers.client("app", ("ops",))
    expected = {
        "inv.get": ("query", "Reads a count.", "public", []),
        "inv.set": ("mutation", "Sets a count.", "scoped", ["ops"]),
        "inv.watch": ("subscription", "Streams counts.", "authenticated", []),
    }
    for operation_id, (op_type, description, access, scopes) in expected.items():
        entry = await wait(client.call("hub.operations.get", {"operationId": operation_id}))
        assert entry["id"] == operation_id
        assert entry["type"] == op_type
        assert entry["description"] == description
        assert entry["accessLevel"] == access
        assert entry["requiredScopes"] == scopes
        assert entry["inputSchema"] == schemas[operation_id][0]
        assert entry["outputSchema"] == schemas[operation_id][1]
        assert entry["activeRegistrations"] == 1
        [registration] = entry["registrations"]
        assert registration["status"] == "active"
        assert registration["providerType"] == "spoke"
        assert registration["providerId"] == "edge"
        assert registration["preRemapId"] == operation_id


# -- C03 query, C04 mutation, C05 subscription -------------------------------------


async def test_c03_query(peers: Peers) -> None:
    spoke = await peers.spoke("edge")

    @spoke.query("demo.echo")
    async def echo(input: Any, ctx: CallContext) -> Any:
        return input

    @spoke.query("demo.whoami")
    async def whoami(input: Any, ctx: CallContext) -> Any:
        assert ctx.identity is not None
        return {"caller": ctx.identity.id, "kind": ctx.identity.kind, "requestId": ctx.request_id}

    @spoke.query("demo.nothing")
    def nothing(input: Any, ctx: CallContext) -> None:  # a plain function works too
        return None

    await wait(spoke.start())
    client = await peers.client("app")
    value = {"hello": "world", "n": [1, 2.5, None, True], "nested": {"a": "é"}}
    assert await wait(client.call("demo.echo", value)) == value
    # Arrays of one or two elements and scalars come back as sent.
    assert await wait(client.call("demo.echo", [7])) == [7]
    assert await wait(client.call("demo.echo", [7, {"meta": 1}])) == [7, {"meta": 1}]
    assert await wait(client.call("demo.echo", "text")) == "text"
    assert await wait(client.call("demo.echo", {"data": 1, "meta": None})) == {"data": 1, "meta": None}
    assert await wait(client.call("demo.nothing")) is None
    who = await wait(client.call("demo.whoami"))
    assert who["caller"] == "app" and who["kind"] == "client"
    assert who["requestId"].startswith("h")


async def test_c04_mutation(peers: Peers) -> None:
    spoke = await peers.spoke("edge")
    counter = {"value": 0}

    @spoke.mutation("demo.increment", input_schema={"type": "object"})
    async def increment(input: dict[str, int], ctx: CallContext) -> dict[str, int]:
        counter["value"] += input.get("by", 1)
        return {"value": counter["value"]}

    await wait(spoke.start())
    client = await peers.client("app")
    assert await wait(client.call("demo.increment", {"by": 2})) == {"value": 2}
    assert await wait(client.call("demo.increment", {})) == {"value": 3}
    assert counter["value"] == 3


async def test_c05_subscription(peers: Peers) -> None:
    spoke = await peers.spoke("edge")
    closed = asyncio.Event()

    @spoke.subscription("demo.ticks")
    async def ticks(input: dict[str, int], ctx: CallContext) -> AsyncIterator[dict[str, int]]:
        try:
            for i in range(1, input["count"] + 1):
                yield {"tick": i}
                await asyncio.sleep(0.01)
        finally:
            closed.set()

    await wait(spoke.start())
    client = await peers.client("app")

    async def collect() -> list[Any]:
        return [event async for event in client.subscribe("demo.ticks", {"count": 5})]

    assert await wait(collect()) == [{"tick": i} for i in range(1, 6)]
    assert closed.is_set()
    # Many events in a burst arrive complete and in order.
    many = [event async for event in client.subscribe("demo.ticks", {"count": 300})]
    assert many == [{"tick": i} for i in range(1, 301)]


# -- C06 caller abort ----------------------------------------------------------------


async def test_c06_caller_abort_query_cancels_the_handler(peers: Peers) -> None:
    spoke = await peers.spoke("edge")
    probe = Probe()

    @spoke.query("demo.slow")
    async def slow(input: Any, ctx: CallContext) -> None:
        await probe.hold(ctx)

    await wait(spoke.start())
    client = await peers.client("app")
    call = asyncio.create_task(client.call("demo.slow"))
    await wait(probe.started.wait())
    call.cancel()
    await wait(probe.cancelled.wait())
    with pytest.raises(asyncio.CancelledError):
        await call
    assert client.connected


async def test_c06_caller_abort_subscription_stops_the_source(peers: Peers) -> None:
    spoke = await peers.spoke("edge")
    produced = itertools.count(1)
    last = {"value": 0}
    cancelled = asyncio.Event()
    closed = asyncio.Event()

    @spoke.subscription("demo.forever")
    async def forever(input: Any, ctx: CallContext) -> AsyncIterator[int]:
        try:
            while True:
                last["value"] = next(produced)
                yield last["value"]
                await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        finally:
            closed.set()

    await wait(spoke.start())
    client = await peers.client("app")

    # aclose() aborts the call.
    events = client.subscribe("demo.forever")
    assert await wait(anext(events)) == 1
    assert await wait(anext(events)) == 2
    await events.aclose()
    await wait(closed.wait())
    assert cancelled.is_set()
    stopped_at = last["value"]
    await asyncio.sleep(0.5)
    assert last["value"] == stopped_at, "the source went on after the abort"

    # So does leaving the `async for` early.
    closed.clear()
    cancelled.clear()

    async def take_two() -> list[int]:
        received = []
        async for event in client.subscribe("demo.forever"):
            received.append(event)
            if len(received) == 2:
                break
        return received

    assert len(await wait(take_two())) == 2
    await wait(closed.wait())
    assert cancelled.is_set()


async def test_c06_cancelling_the_iterating_task_aborts_the_subscription(peers: Peers) -> None:
    spoke = await peers.spoke("edge")
    probe = Probe()

    @spoke.subscription("demo.quiet")
    async def quiet(input: Any, ctx: CallContext) -> AsyncIterator[int]:
        yield 0
        await probe.hold(ctx)

    await wait(spoke.start())
    client = await peers.client("app")

    async def consume() -> None:
        async for _ in client.subscribe("demo.quiet"):
            pass

    task = asyncio.create_task(consume())
    await wait(probe.started.wait())
    task.cancel()
    await wait(probe.cancelled.wait())


# -- C07 provider error ----------------------------------------------------------------


async def test_c07_provider_error_code_message_and_details(peers: Peers) -> None:
    spoke = await peers.spoke("edge")

    @spoke.query("disk.write")
    async def write(input: Any, ctx: CallContext) -> None:
        raise HubError("DISK_FULL", "the disk is full", {"freeBytes": 0, "path": "/data"})

    @spoke.query("disk.check")
    async def check(input: Any, ctx: CallContext) -> None:
        raise ValidationError("bad path", {"errors": [{"instancePath": "/path", "message": "no"}]})

    @spoke.query("disk.crash")
    async def crash(input: Any, ctx: CallContext) -> None:
        raise RuntimeError("something broke")

    await wait(spoke.start())
    client = await peers.client("app")

    with pytest.raises(HubError) as raised:
        await wait(client.call("disk.write"))
    assert type(raised.value) is HubError  # a domain code keeps the base class
    assert raised.value.code == "DISK_FULL"
    assert raised.value.message == "the disk is full"
    assert raised.value.details == {"freeBytes": 0, "path": "/data"}

    with pytest.raises(ValidationError) as validation:
        await wait(client.call("disk.check"))
    assert validation.value.message == "bad path"
    assert validation.value.details == {"errors": [{"instancePath": "/path", "message": "no"}]}

    with pytest.raises(ExecutionError) as execution:
        await wait(client.call("disk.crash"))
    assert execution.value.code == "EXECUTION_ERROR"
    assert "something broke" in execution.value.message


async def test_c07_subscription_error_after_events(peers: Peers) -> None:
    spoke = await peers.spoke("edge")

    @spoke.subscription("feed.flaky")
    async def flaky(input: Any, ctx: CallContext) -> AsyncIterator[int]:
        yield 1
        yield 2
        raise HubError("FEED_BROKEN", "the feed broke", {"after": 2})

    @spoke.subscription("feed.crash")
    async def crash(input: Any, ctx: CallContext) -> AsyncIterator[int]:
        yield 1
        raise KeyError("missing")

    await wait(spoke.start())
    client = await peers.client("app")

    received: list[int] = []
    with pytest.raises(HubError) as raised:
        async for event in client.subscribe("feed.flaky"):
            received.append(event)
    assert received == [1, 2]
    assert (raised.value.code, raised.value.message, raised.value.details) == (
        "FEED_BROKEN", "the feed broke", {"after": 2},
    )

    received = []
    with pytest.raises(ExecutionError):
        async for event in client.subscribe("feed.crash"):
            received.append(event)
    assert received == [1]


# -- C08 deadline, C09 idle timeout -----------------------------------------------------


async def test_c08_deadline(peers: Peers) -> None:
    spoke = await peers.spoke("edge")
    probe = Probe()

    @spoke.query("demo.slow")
    async def slow(input: Any, ctx: CallContext) -> None:
        await probe.hold(ctx)

    await wait(spoke.start())
    client = await peers.client("app")
    with pytest.raises(HubTimeoutError) as raised:
        await wait(client.call("demo.slow", timeout_ms=300))
    assert raised.value.code == "TIMEOUT"
    await wait(probe.cancelled.wait())
    # The provider was given the deadline.
    deadline = probe.contexts[0].deadline
    assert isinstance(deadline, int) and deadline > 0

    # A deadline already passed never reaches the provider.
    with pytest.raises(HubTimeoutError):
        await wait(client.call("demo.slow", timeout_ms=0))
    assert len(probe.contexts) == 1


async def test_c09_idle_timeout(peers: Peers) -> None:
    spoke = await peers.spoke("edge")
    probe = Probe()

    @spoke.subscription("demo.quiet")
    async def quiet(input: Any, ctx: CallContext) -> AsyncIterator[int]:
        yield 1
        await probe.hold(ctx)

    await wait(spoke.start())
    client = await peers.client("app")
    received = []
    with pytest.raises(HubTimeoutError):
        async for event in client.subscribe("demo.quiet", idle_timeout_ms=400):
            received.append(event)
    assert received == [1]
    await wait(probe.cancelled.wait())


# -- C10 parent call ---------------------------------------------------------------------


async def test_c10_parent_call_abort_reaches_the_child(peers: Peers) -> None:
    front = await peers.spoke("front")
    back = await peers.spoke("back")
    inner = Probe()
    outer = Probe()
    child_outcome: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    @back.query("back.work")
    async def work(input: Any, ctx: CallContext) -> None:
        await inner.hold(ctx)

    async def child(ctx: CallContext) -> None:
        try:
            await ctx.call("back.work", {"job": 1})
            child_outcome.set_result(None)
        except BaseException as e:  # recorded for the test
            child_outcome.set_result(e)

    @front.query("front.job")
    async def job(input: Any, ctx: CallContext) -> None:
        # The child call runs in a task of its own, which the outer call's
        # cancellation does not reach: only the hub can abort it.
        background.append(asyncio.create_task(child(ctx)))
        await outer.hold(ctx)

    background: list[asyncio.Task[None]] = []
    await wait(back.start())
    await wait(front.start())
    client = await peers.client("app")

    call = asyncio.create_task(client.call("front.job"))
    await wait(inner.started.wait())
    assert inner.contexts[0].parent_request_id == outer.contexts[0].request_id
    call.cancel()
    await wait(outer.cancelled.wait())
    await wait(inner.cancelled.wait())
    error = await wait(child_outcome)
    assert isinstance(error, AbortedError), error
    assert error.code == "ABORTED"

    # A child call that names a call its connection does not serve is refused.
    with pytest.raises(HubError) as raised:
        await wait(client.call("back.work", parent_request_id="h999999"))
    assert raised.value.code == "PROTOCOL_ERROR"


async def test_c10_child_subscription_names_its_parent(peers: Peers) -> None:
    spoke = await peers.spoke("edge")
    parents: list[str | None] = []

    @spoke.subscription("num.count")
    async def count(input: Any, ctx: CallContext) -> AsyncIterator[int]:
        parents.append(ctx.parent_request_id)
        for i in range(3):
            yield i

    @spoke.query("num.total")
    async def total(input: Any, ctx: CallContext) -> dict[str, Any]:
        values = [v async for v in ctx.subscribe("num.count")]
        return {"sum": sum(values), "me": ctx.request_id}

    await wait(spoke.start())
    client = await peers.client("app")
    result = await wait(client.call("num.total"))
    assert result["sum"] == 3
    assert parents == [result["me"]]


# -- C11 reconnect -------------------------------------------------------------------------


async def test_c11_reconnect_after_hub_restart(hub: Hub, peers: Peers) -> None:
    spoke = await peers.spoke("edge")

    @spoke.query("demo.echo")
    async def echo(input: Any, ctx: CallContext) -> Any:
        return input

    first = await wait(spoke.start())
    client = await peers.client("app")
    assert await wait(client.call("demo.echo", 1)) == 1

    await asyncio.to_thread(hub.restart)
    # The old client's connection ended with the hub.
    with pytest.raises(HubError):
        await wait(client.call("demo.echo", 2))

    async def served() -> Any:
        fresh = Client(hub.http_url, await peers.client_token("app"))
        await fresh.connect()
        try:
            return await fresh.call("demo.echo", {"after": "restart"})
        finally:
            await fresh.close()

    assert await wait(eventually(served, timeout=60), timeout=90) == {"after": "restart"}
    assert spoke.reconnects >= 1
    assert spoke.connected and not spoke.closed
    assert spoke.welcome is not first
    assert spoke.welcome is not None
    assert [r.operation_id for r in spoke.welcome.registrations] == ["demo.echo"]


def test_c11_backoff_grows_with_jitter_up_to_its_maximum() -> None:
    backoff = Backoff(initial=0.1, maximum=1.0, multiplier=2.0, jitter=0.25)
    for attempt, full in enumerate([0.1, 0.2, 0.4, 0.8, 1.0, 1.0]):
        delays = [backoff.delay(attempt) for _ in range(200)]
        assert all(0.75 * full - 1e-9 <= d <= full + 1e-9 for d in delays)
        assert max(delays) - min(delays) > 0  # jittered
    assert backoff.delay(10_000) <= 1.0


# -- C12 supersede -----------------------------------------------------------------------------


async def test_c12_supersede_ends_the_old_session_without_reconnect(peers: Peers) -> None:
    first = await peers.spoke("edge")
    second = await peers.spoke("edge")

    @first.query("demo.who")
    async def who_first(input: Any, ctx: CallContext) -> str:
        return "first"

    @second.query("demo.who")
    async def who_second(input: Any, ctx: CallContext) -> str:
        return "second"

    await wait(first.start())
    client = await peers.client("app")
    assert await wait(client.call("demo.who")) == "first"

    await wait(second.start())
    with pytest.raises(SupersededError) as raised:
        await wait(first.wait_closed())
    assert raised.value.close_code == 4409
    assert first.close_code == 4409
    assert "superseded" in first.close_reason

    # The first does not come back (it would take over again).
    await asyncio.sleep(1.5)
    assert first.closed and not first.connected and first.reconnects == 0
    assert second.connected and not second.closed
    assert await wait(client.call("demo.who")) == "second"


# -- C13 errors by code --------------------------------------------------------------------------


async def test_c13_errors_by_code(peers: Peers) -> None:
    spoke = await peers.spoke("edge")

    async def ok(input: Any, ctx: CallContext) -> str:
        return "ok"

    spoke.operation(
        "calc.square", "query", ok,
        input_schema={"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
    )
    spoke.operation("calc.secret", "query", ok, access="scoped", required_scopes=["secret"])
    spoke.operation("calc.internal", "query", ok, access="internal")
    await wait(spoke.start())
    client = await peers.client("app")

    with pytest.raises(OperationNotFoundError) as not_found:
        await wait(client.call("calc.nothing"))
    assert not_found.value.code == "OPERATION_NOT_FOUND"
    with pytest.raises(OperationNotFoundError):
        await wait(client.call("calc.internal"))

    with pytest.raises(ValidationError) as invalid:
        await wait(client.call("calc.square", {"n": "four"}))
    assert invalid.value.code == "VALIDATION_ERROR"
    errors = invalid.value.details["errors"]
    assert errors and all({"instancePath", "message"} <= set(e) for e in errors)
    assert any(e["instancePath"] == "/n" for e in errors)
    assert await wait(client.call("calc.square", {"n": 4})) == "ok"

    with pytest.raises(AccessDeniedError) as denied:
        await wait(client.call("calc.secret"))
    assert denied.value.code == "ACCESS_DENIED"

    await spoke.close()

    async def no_provider() -> None:
        with pytest.raises(NoProviderError):
            await client.call("calc.square", {"n": 4})

    await wait(eventually(no_provider))


# -- C14 heartbeat ------------------------------------------------------------------------------


async def silent_peer_close_code(hub: Hub, token: str) -> int:
    """Connects over a raw socket, sends ``hello`` and never answers a ping.

    Returns the close code the hub ends the connection with.
    """
    assert hub.addr is not None
    host, port = hub.addr.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /v1/clients/connect HTTP/1.1\r\nHost: {hub.addr}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    hello = json.dumps({"type": "hello", "payload": {"token": token}}).encode()
    mask = os.urandom(4)
    size = (
        bytes([0x80 | len(hello)]) if len(hello) < 126
        else bytes([0x80 | 126]) + struct.pack("!H", len(hello))
    )
    writer.write(bytes([0x81]) + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(hello)))
    try:
        while True:
            first, second = await reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await reader.readexactly(8))
            payload = await reader.readexactly(length)
            if first & 0x0F == 0x8:
                code: int = struct.unpack("!H", payload[:2])[0]
                return code
    finally:
        writer.close()


async def test_c14_heartbeat_keeps_idle_peers_connected(make_hub: Any) -> None:
    hub = make_hub("[limits]\nheartbeat_ms = 300\n")
    peers = Peers(hub)
    try:
        spoke = await peers.spoke("edge")

        @spoke.query("demo.echo")
        async def echo(input: Any, ctx: CallContext) -> Any:
            return input

        welcome = await wait(spoke.start())
        client = await peers.client("app")
        assert welcome.heartbeat_ms == 300
        assert client.welcome is not None and client.welcome.heartbeat_ms == 300

        # Control: a peer that answers no ping is dropped (1011) within a few
        # intervals, so staying connected below is the library's doing.
        silent = await wait(silent_peer_close_code(hub, await peers.client_token("silent")))
        assert silent == 1011

        # Idle for more than ten intervals.
        await asyncio.sleep(3.5)
        assert spoke.connected and client.connected
        assert spoke.reconnects == 0 and spoke.welcome is welcome
        assert await wait(client.call("demo.echo", "still here")) == "still here"
    finally:
        await peers.close()
