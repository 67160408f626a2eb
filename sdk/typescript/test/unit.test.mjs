// Parts that need no hub: the SSE parser, backoff, error mapping, URLs,
// declarations, and giving up on an unreachable hub.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  AbortedError,
  Client,
  ConnectionClosedError,
  HubError,
  OperationNotFoundError,
  Spoke,
  TimeoutError,
  hubError,
} from "../dist/index.js";
import { backoffDelay, reconnectPolicy } from "../dist/backoff.js";
import { errorFromPayload } from "../dist/errors.js";
import { EventParser, readEvents } from "../dist/sse.js";
import { operationUrl, webSocketUrl } from "../dist/url.js";

test("SSE: events are parsed whatever the chunking and line endings", () => {
  const stream =
    'event: responded\r\ndata: {"data":1}\r\n\r\n' +
    ": a comment\n" +
    'event: responded\ndata:{"data":2}\n\n' +
    "data: first\rdata: second\r\r" +
    "event: completed\ndata: {}\n\n" +
    'event: error\ndata: {"unterminated":true}\n';
  const expected = [
    { event: "responded", data: '{"data":1}' },
    { event: "responded", data: '{"data":2}' },
    { event: "message", data: "first\nsecond" },
    { event: "completed", data: "{}" },
  ];
  for (const size of [1, 2, 3, 7, stream.length]) {
    const parser = new EventParser();
    const events = [];
    for (let i = 0; i < stream.length; i += size) events.push(...parser.push(stream.slice(i, i + size)));
    events.push(...parser.push("", true));
    assert.deepEqual(events, expected, `chunks of ${size}`);
  }
});

test("SSE: readEvents reads a byte stream split inside a UTF-8 character", async () => {
  const bytes = new TextEncoder().encode('event: responded\ndata: {"data":"héllo"}\n\n');
  const split = bytes.indexOf(0xc3) + 1;
  const body = new ReadableStream({
    start(controller) {
      controller.enqueue(bytes.slice(0, split));
      controller.enqueue(bytes.slice(split));
      controller.close();
    },
  });
  const events = [];
  for await (const event of readEvents(body)) events.push(event);
  assert.deepEqual(events, [{ event: "responded", data: '{"data":"héllo"}' }]);
});

test("backoff: grows by the factor, is capped, and jitter only shortens", () => {
  const policy = reconnectPolicy({ initialDelayMs: 100, maxDelayMs: 1000, factor: 2, jitter: 0.5 });
  assert.deepEqual(
    [0, 1, 2, 3, 4, 10].map((n) => backoffDelay(policy, n, () => 0)),
    [100, 200, 400, 800, 1000, 1000],
  );
  assert.deepEqual(
    [0, 1, 10].map((n) => backoffDelay(policy, n, () => 1)),
    [50, 100, 500],
  );
  for (let i = 0; i < 100; i++) {
    const delay = backoffDelay(policy, 2);
    assert.ok(delay >= 200 && delay <= 400, `${delay}`);
  }
  assert.deepEqual(reconnectPolicy(), {
    initialDelayMs: 250,
    maxDelayMs: 30_000,
    factor: 2,
    jitter: 0.5,
    maxAttempts: Number.POSITIVE_INFINITY,
  });
  assert.throws(() => reconnectPolicy({ jitter: 2 }), RangeError);
});

test("errors: protocol codes map to their classes, other codes stay HubError", () => {
  const codes = {
    OPERATION_NOT_FOUND: "OperationNotFoundError",
    NO_PROVIDER: "NoProviderError",
    UNAUTHENTICATED: "UnauthenticatedError",
    ACCESS_DENIED: "AccessDeniedError",
    VALIDATION_ERROR: "ValidationError",
    TIMEOUT: "TimeoutError",
    ABORTED: "AbortedError",
    PROVIDER_GONE: "ProviderGoneError",
    OVERLOADED: "OverloadedError",
    ROUTING_ERROR: "RoutingError",
    ALREADY_REGISTERED: "AlreadyRegisteredError",
    EXECUTION_ERROR: "ExecutionError",
    PROTOCOL_ERROR: "ProtocolError",
    UNKNOWN_ERROR: "UnknownError",
  };
  for (const [code, name] of Object.entries(codes)) {
    const error = hubError(code, "m", { x: 1 });
    assert.equal(error.constructor.name, name);
    assert.equal(error.name, name);
    assert.ok(error instanceof HubError && error instanceof Error);
    assert.equal(error.code, code);
    assert.equal(error.constructor.code, code);
    assert.deepEqual(error.details, { x: 1 });
  }
  const domain = hubError("DISK_FULL", "full");
  assert.equal(domain.constructor, HubError);
  assert.equal(domain.code, "DISK_FULL");
  assert.equal(domain.details, undefined);

  const fromSse = errorFromPayload({ code: "TIMEOUT", message: "late", details: null });
  assert.ok(fromSse instanceof TimeoutError);
  assert.equal(fromSse.details, undefined);
  assert.equal(errorFromPayload({}).code, "UNKNOWN_ERROR");
  assert.ok(new OperationNotFoundError("gone") instanceof HubError);
});

test("urls: the WebSocket endpoints and HTTP routes follow the base URL", () => {
  assert.equal(webSocketUrl("http://127.0.0.1:7700", "spokes"), "ws://127.0.0.1:7700/v1/spokes/connect");
  assert.equal(webSocketUrl("https://localhost/hub/", "clients"), "wss://localhost/hub/v1/clients/connect");
  assert.equal(
    webSocketUrl("http://localhost:7700/hub", "clients"),
    "ws://localhost:7700/hub/v1/clients/connect",
  );
  assert.equal(webSocketUrl("ws://localhost:1/custom", "spokes"), "ws://localhost:1/custom");
  assert.throws(() => webSocketUrl("ftp://localhost", "spokes"), TypeError);
  assert.equal(
    operationUrl("http://localhost:7700", "demo.echo", "subscribe"),
    "http://localhost:7700/v1/operations/demo.echo/subscribe",
  );
});

test("declarations: ids are checked and operations are declared before connecting", () => {
  const spoke = new Spoke({ url: "http://127.0.0.1:9", token: "alk_spoke_x", reconnect: false });
  assert.throws(() => spoke.operation({ id: "nodot", type: "query" }, () => 1), TypeError);
  assert.throws(() => spoke.operation({ type: "query" }, () => 1), TypeError);
  assert.throws(() => spoke.operation({ id: "a.b", type: "stream" }, () => 1), TypeError);
  spoke.operation({ namespace: "a.b", name: "c", type: "query" }, () => 1);
  assert.throws(() => spoke.operation({ id: "a.b.c", type: "query" }, () => 1), /declared twice/);
  assert.throws(() => new Client({ url: "http://127.0.0.1:9", token: "" }), TypeError);
});

test("an unreachable hub: connect gives up after maxAttempts; calls fail as closed", async () => {
  // Port 9 (discard) on loopback refuses connections.
  const client = new Client({
    url: "http://127.0.0.1:9",
    token: "alk_client_x",
    reconnect: { initialDelayMs: 5, maxDelayMs: 20, maxAttempts: 3 },
  });
  const retries = [];
  client.on("reconnecting", (info) => retries.push(info.attempt));
  await assert.rejects(client.connect(), ConnectionClosedError);
  assert.deepEqual(retries, [1, 2, 3]);
  assert.equal((await client.closed).code, 1006);
  await assert.rejects(client.call("demo.echo"), ConnectionClosedError);
});

test("a call waiting for a connection honours its signal and timeout", async () => {
  const client = new Client({
    url: "http://127.0.0.1:9",
    token: "alk_client_x",
    reconnect: { initialDelayMs: 50 },
  });
  try {
    await assert.rejects(client.call("demo.echo", {}, { timeoutMs: 100 }), TimeoutError);
    const controller = new AbortController();
    const pending = client.call("demo.echo", {}, { signal: controller.signal });
    controller.abort(new Error("changed my mind"));
    await assert.rejects(pending, (error) => {
      assert.ok(error instanceof AbortedError);
      assert.equal(error.cause.message, "changed my mind");
      return true;
    });
    const stopped = new AbortController();
    stopped.abort();
    const events = client.subscribe("demo.ticks", {}, { signal: stopped.signal });
    await assert.rejects(events.next(), AbortedError);
  } finally {
    await client.close();
  }
  assert.equal(client.state, "closed");
});

/** A WebSocket that reports an error, or nothing at all, and never a close event. */
function silentSocket({ error }) {
  return class {
    static opened = 0;
    readyState = 0;
    bufferedAmount = 0;
    constructor() {
      this.constructor.opened++;
      if (error) setTimeout(() => this.onerror?.({}), 5);
    }
    send() {}
    close() {}
  };
}

test("a connection that errs without a close event is given up, and retried", async () => {
  const WebSocket = silentSocket({ error: true });
  const client = new Client({
    url: "http://127.0.0.1:9",
    token: "alk_client_x",
    WebSocket,
    reconnect: { initialDelayMs: 5, maxAttempts: 1 },
  });
  await assert.rejects(client.connect(), ConnectionClosedError);
  assert.deepEqual(await client.closed, { code: 1006, reason: "the connection failed" });
  assert.equal(WebSocket.opened, 2);
});

test("a connection that brings no welcome is given up after connectTimeoutMs", async () => {
  const WebSocket = silentSocket({ error: false });
  const spoke = new Spoke({
    url: "http://127.0.0.1:9",
    token: "alk_spoke_x",
    WebSocket,
    connectTimeoutMs: 100,
    reconnect: false,
  });
  await assert.rejects(spoke.connect(), ConnectionClosedError);
  assert.deepEqual(await spoke.closed, { code: 1006, reason: "no welcome within 100 ms" });
  assert.equal(WebSocket.opened, 1);
});

test("a call the hub never answers fails with TimeoutError soon after its deadline", async () => {
  // A hub that welcomes, then stays silent: the connection died without a close.
  class MuteHub {
    readyState = 0;
    bufferedAmount = 0;
    sent = [];
    constructor() {
      MuteHub.last = this;
      setTimeout(() => {
        this.readyState = 1;
        this.onopen?.({});
      }, 1);
    }
    send(text) {
      const frame = JSON.parse(text);
      this.sent.push(frame.type);
      if (frame.type === "hello") {
        const welcome = {
          sessionId: "1",
          principal: { kind: "client", id: "x", scopes: [] },
          heartbeatMs: 15000,
          registrations: [],
          rejected: [],
        };
        setTimeout(
          () => this.onmessage?.({ data: JSON.stringify({ type: "welcome", payload: welcome }) }),
          1,
        );
      }
    }
    close() {}
  }
  const client = new Client({
    url: "http://127.0.0.1:9",
    token: "alk_client_x",
    WebSocket: MuteHub,
    reconnect: false,
  });
  await client.connect();
  await assert.rejects(client.call("demo.echo", {}, { timeoutMs: 50 }), TimeoutError);
  const events = client.subscribe("demo.ticks", {}, { timeoutMs: 50 });
  await assert.rejects(events.next(), TimeoutError);
  assert.deepEqual(MuteHub.last.sent, [
    "hello",
    "call.requested",
    "call.aborted",
    "call.requested",
    "call.aborted",
  ]);
  await client.close();
});
