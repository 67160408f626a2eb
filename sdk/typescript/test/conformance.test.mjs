// The peer conformance scenarios of sdk/conformance.md, C01 to C15, each
// against a real hub.

import assert from "node:assert/strict";
import { test } from "node:test";
import WebSocket from "ws";

import {
  AbortedError,
  AccessDeniedError,
  Client,
  ExecutionError,
  HubError,
  NoProviderError,
  OperationNotFoundError,
  Spoke,
  TimeoutError,
  UnauthenticatedError,
  ValidationError,
  httpCall,
  httpSubscribe,
} from "../dist/index.js";
import { hubFor } from "./support/hub.mjs";
import { aborted, sleep, waitFor, within } from "./support/wait.mjs";

/**
 * The WebSocket the peers use: the platform's choice (the `ws` package on
 * Node 20), or with ALKHUB_TEST_WEBSOCKET=global the global one, as browsers
 * and Node 22 have it.
 */
function transport() {
  if (process.env.ALKHUB_TEST_WEBSOCKET !== "global") return {};
  if (!globalThis.WebSocket) {
    throw new Error(
      "ALKHUB_TEST_WEBSOCKET=global, but there is no global WebSocket (Node 20: --experimental-websocket)",
    );
  }
  return { WebSocket: globalThis.WebSocket };
}

function peerOptions(env, name, options) {
  return {
    url: env.hub.url,
    token: env.tokens[name],
    reconnect: { initialDelayMs: 50, maxDelayMs: 1000 },
    ...transport(),
    ...options,
  };
}

/** A spoke on `env`'s hub, closed when the test ends. */
function spokeOf(env, name, options = {}) {
  return env.track(new Spoke(peerOptions(env, name, options)));
}

/** A client on `env`'s hub, closed when the test ends. */
function clientOf(env, name, options = {}) {
  return env.track(new Client(peerOptions(env, name, options)));
}

/** Every value of an async iterable, and the error that ended it, if any. */
async function drain(iterable) {
  const values = [];
  try {
    for await (const value of iterable) values.push(value);
  } catch (error) {
    return { values, error };
  }
  return { values };
}

test("C01 connect: spoke and client get their welcome; a wrong token fails without retrying", async (t) => {
  const env = await hubFor(t, { spokes: ["c01-spoke"], clients: { "c01-client": {} } });

  const spoke = spokeOf(env, "c01-spoke");
  const welcome = await spoke.connect();
  assert.match(welcome.sessionId, /^\d+$/);
  assert.ok(Number.isInteger(welcome.heartbeatMs) && welcome.heartbeatMs > 0);
  assert.deepEqual(welcome.principal, { kind: "spoke", id: "c01-spoke", scopes: [] });
  assert.equal(spoke.state, "open");
  assert.equal(spoke.welcome, welcome);

  const client = clientOf(env, "c01-client");
  const clientWelcome = await client.connect();
  assert.match(clientWelcome.sessionId, /^\d+$/);
  assert.notEqual(clientWelcome.sessionId, welcome.sessionId);
  assert.equal(clientWelcome.principal.kind, "client");
  assert.equal(clientWelcome.principal.id, "c01-client");

  const refusals = [
    // an unknown spoke token
    new Spoke({
      ...transport(),
      url: env.hub.url,
      token: `alk_spoke_${"0".repeat(64)}`,
      reconnect: { initialDelayMs: 10 },
    }),
    // a client token on the spokes endpoint
    new Spoke({
      ...transport(),
      url: env.hub.url,
      token: env.tokens["c01-client"],
      reconnect: { initialDelayMs: 10 },
    }),
  ];
  for (const wrong of refusals) {
    env.track(wrong);
    let retries = 0;
    wrong.on("reconnecting", () => retries++);
    await assert.rejects(wrong.connect(), (error) => {
      assert.ok(error instanceof UnauthenticatedError, `${error}`);
      assert.ok(error instanceof HubError);
      assert.equal(error.code, "UNAUTHENTICATED");
      return true;
    });
    const info = await wrong.closed;
    assert.equal(info.code, 4401);
    assert.ok(info.error instanceof UnauthenticatedError);
    await sleep(300);
    assert.equal(retries, 0, "no retry after 4401");
    assert.equal(wrong.state, "closed");
    await assert.rejects(wrong.call("hub.operations.list"), UnauthenticatedError);
  }
});

test("C02 declare: hub.operations.get returns each declared operation with its fields", async (t) => {
  const env = await hubFor(t, { spokes: ["c02-spoke"], clients: { "c02-client": { scopes: ["writer"] } } });
  const key = { type: "object", properties: { key: { type: "string" } }, required: ["key"] };
  const declared = [
    {
      id: "c02.store.get",
      type: "query",
      description: "Reads a key.",
      input: key,
      output: { type: ["string", "null"] },
      access: "authenticated",
    },
    {
      id: "c02.store.set",
      type: "mutation",
      description: "Writes a key.",
      input: { ...key, properties: { ...key.properties, value: { type: "string" } } },
      output: { type: "boolean" },
      access: "scoped",
      requiredScopes: ["writer"],
    },
    {
      id: "c02.store.watch",
      type: "subscription",
      description: "Streams the changes of a key.",
      input: key,
      output: { type: "object", properties: { value: { type: "string" } } },
      access: "public",
    },
  ];
  const spoke = spokeOf(env, "c02-spoke");
  for (const definition of declared) {
    if (definition.type === "subscription") spoke.operation(definition, async function* () {});
    else spoke.operation(definition, () => null);
  }
  const welcome = await spoke.connect();
  assert.deepEqual(welcome.rejected, []);
  assert.deepEqual(welcome.registrations.map((r) => r.preRemapId).sort(), declared.map((d) => d.id).sort());

  const client = clientOf(env, "c02-client");
  for (const definition of declared) {
    const got = await client.call("hub.operations.get", { operationId: definition.id });
    assert.equal(got.id, definition.id);
    assert.equal(got.namespace, "c02.store");
    assert.equal(got.name, definition.id.split(".").pop());
    assert.equal(got.type, definition.type);
    assert.equal(got.description, definition.description);
    assert.deepEqual(got.inputSchema, definition.input);
    assert.deepEqual(got.outputSchema, definition.output);
    assert.equal(got.accessLevel, definition.access);
    assert.deepEqual(got.requiredScopes, definition.requiredScopes ?? []);
    assert.equal(got.source, "spoke");
    const active = got.registrations.filter((r) => r.status === "active");
    assert.equal(active.length, 1);
    assert.equal(active[0].providerId, "c02-spoke");
    assert.equal(active[0].providerType, "spoke");
    assert.equal(active[0].preRemapId, definition.id);
  }
});

test("C03 query: a client gets the handler's result", async (t) => {
  const env = await hubFor(t, { spokes: ["c03-spoke"], clients: { "c03-client": {} } });
  const spoke = spokeOf(env, "c03-spoke");
  let seen;
  spoke.operation({ id: "c03.greet", type: "query" }, (input, ctx) => {
    seen = ctx;
    return { greeting: `hello ${input.name}` };
  });
  spoke.operation({ id: "c03.same", type: "query" }, (input) => input);
  await spoke.connect();
  const client = clientOf(env, "c03-client");

  assert.deepEqual(await client.call("c03.greet", { name: "world" }), { greeting: "hello world" });
  assert.match(seen.requestId, /^h\d+$/);
  assert.equal(seen.operationId, "c03.greet");
  assert.deepEqual(seen.identity, { kind: "client", id: "c03-client", scopes: [] });
  assert.equal(seen.signal.aborted, false);

  // Results arrive exactly as returned, whatever their shape.
  for (const value of [[1], [1, { m: 2 }], null, { data: 5 }, { meta: 1 }, "text", 0, false, { a: [] }]) {
    assert.deepEqual(await client.call("c03.same", value), value);
  }
});

test("C04 mutation: a client gets the handler's result and the change is made", async (t) => {
  const env = await hubFor(t, { spokes: ["c04-spoke"], clients: { "c04-client": {} } });
  const spoke = spokeOf(env, "c04-spoke");
  let total = 0;
  spoke.operation(
    {
      id: "c04.counter.add",
      type: "mutation",
      input: { type: "object", properties: { by: { type: "integer" } }, required: ["by"] },
    },
    async ({ by }) => {
      await sleep(5);
      total += by;
      return { total };
    },
  );
  await spoke.connect();
  const client = clientOf(env, "c04-client");
  assert.deepEqual(await client.call("c04.counter.add", { by: 2 }), { total: 2 });
  assert.deepEqual(await client.call("c04.counter.add", { by: 3 }), { total: 5 });
  assert.equal(total, 5);
});

test("C05 subscription: events arrive in order, then the stream ends", async (t) => {
  const env = await hubFor(t, { spokes: ["c05-spoke"], clients: { "c05-client": {} } });
  const spoke = spokeOf(env, "c05-spoke");
  spoke.operation({ id: "c05.count", type: "subscription" }, async function* ({ count }, ctx) {
    for (let n = 1; n <= count; n++) {
      yield { n };
      await sleep(5, ctx.signal);
    }
  });
  spoke.operation({ id: "c05.list", type: "subscription" }, (input) => input.items);
  await spoke.connect();
  const client = clientOf(env, "c05-client");

  const { values, error } = await drain(client.subscribe("c05.count", { count: 6 }));
  assert.equal(error, undefined);
  assert.deepEqual(
    values,
    [1, 2, 3, 4, 5, 6].map((n) => ({ n })),
  );

  const listed = await drain(client.subscribe("c05.list", { items: ["a", "b", "c"] }));
  assert.deepEqual(listed, { values: ["a", "b", "c"] });

  const empty = await drain(client.subscribe("c05.count", { count: 0 }));
  assert.deepEqual(empty, { values: [] });
});

test("C06 caller abort: the handler's signal fires and the subscription's source stops", async (t) => {
  const env = await hubFor(t, { spokes: ["c06-spoke"], clients: { "c06-client": {} } });
  const spoke = spokeOf(env, "c06-spoke");
  const query = { started: false, aborted: false };
  spoke.operation({ id: "c06.wait", type: "query" }, async (_input, ctx) => {
    query.started = true;
    await aborted(ctx.signal);
    query.aborted = true;
    query.reason = ctx.signal.reason;
    return "too late";
  });
  const streams = {};
  spoke.operation({ id: "c06.stream", type: "subscription" }, async function* ({ key }, ctx) {
    const state = (streams[key] = { signalled: false, stopped: false });
    ctx.signal.addEventListener("abort", () => (state.signalled = true));
    try {
      for (let i = 1; ; i++) {
        yield { i };
        await sleep(10); // not abortable: the source stops at its next yield
      }
    } finally {
      state.stopped = true;
    }
  });
  const busy = { stopped: false };
  spoke.operation({ id: "c06.busy", type: "subscription" }, async function* () {
    try {
      for (let i = 1; ; i++) yield i; // never waits for anything
    } finally {
      busy.stopped = true;
    }
  });
  await spoke.connect();
  const client = clientOf(env, "c06-client");

  // A query, aborted while its handler runs.
  const controller = new AbortController();
  const pending = client.call("c06.wait", {}, { signal: controller.signal });
  await waitFor(() => query.started, "the query handler to start");
  controller.abort();
  await assert.rejects(pending, AbortedError);
  await waitFor(() => query.aborted, "the query handler's signal");
  assert.equal(query.reason.code, "ABORTED");

  // A subscription left with break.
  const seen = [];
  for await (const event of client.subscribe("c06.stream", { key: "break" })) {
    seen.push(event.i);
    if (seen.length === 3) break;
  }
  assert.deepEqual(seen, [1, 2, 3]);
  await waitFor(() => streams.break?.signalled && streams.break.stopped, "the broken-off source to stop");

  // A subscription aborted through its signal.
  const stop = new AbortController();
  const subscription = client.subscribe("c06.stream", { key: "signal" }, { signal: stop.signal });
  const received = [];
  await assert.rejects(async () => {
    for await (const event of subscription) {
      received.push(event);
      if (received.length === 2) stop.abort();
    }
  }, AbortedError);
  await waitFor(() => streams.signal?.signalled && streams.signal.stopped, "the aborted source to stop");

  // A source that never waits still hears the abort.
  let count = 0;
  for await (const i of client.subscribe("c06.busy")) {
    assert.equal(i, ++count);
    if (count === 200) break;
  }
  await waitFor(() => busy.stopped, "the busy source to stop");

  // A subscription stopped with abort().
  const explicit = client.subscribe("c06.stream", { key: "abort" });
  await explicit.next();
  explicit.abort();
  await waitFor(() => streams.abort?.signalled && streams.abort.stopped, "the source stopped by abort()");
});

test("C07 provider error: codes, messages and details reach the caller; events come before a stream's error", async (t) => {
  const env = await hubFor(t, { spokes: ["c07-spoke"], clients: { "c07-client": {} } });
  const spoke = spokeOf(env, "c07-spoke");
  spoke.operation({ id: "c07.full", type: "mutation" }, () => {
    throw new HubError("DISK_FULL", "the disk is full", { freeBytes: 0, volume: "/data" });
  });
  spoke.operation({ id: "c07.crash", type: "query" }, async () => {
    throw new Error("boom");
  });
  spoke.operation({ id: "c07.invalid", type: "query" }, () => {
    throw new ValidationError("no such colour", {
      errors: [{ instancePath: "/colour", message: "unknown" }],
    });
  });
  spoke.operation({ id: "c07.partial", type: "subscription" }, async function* () {
    yield { n: 1 };
    yield { n: 2 };
    throw new HubError("STREAM_BROKEN", "the source broke", { after: 2 });
  });
  spoke.operation({ id: "c07.partialCrash", type: "subscription" }, async function* () {
    yield { n: 1 };
    throw new TypeError("oops");
  });
  await spoke.connect();
  const client = clientOf(env, "c07-client");

  await assert.rejects(client.call("c07.full"), (error) => {
    assert.equal(error.constructor, HubError);
    assert.equal(error.code, "DISK_FULL");
    assert.equal(error.message, "the disk is full");
    assert.deepEqual(error.details, { freeBytes: 0, volume: "/data" });
    return true;
  });
  await assert.rejects(client.call("c07.crash"), (error) => {
    assert.ok(error instanceof ExecutionError);
    assert.equal(error.code, "EXECUTION_ERROR");
    assert.equal(error.message, "boom");
    return true;
  });
  await assert.rejects(client.call("c07.invalid"), (error) => {
    assert.ok(error instanceof ValidationError);
    assert.deepEqual(error.details, { errors: [{ instancePath: "/colour", message: "unknown" }] });
    return true;
  });

  const partial = await drain(client.subscribe("c07.partial"));
  assert.deepEqual(partial.values, [{ n: 1 }, { n: 2 }]);
  assert.equal(partial.error.constructor, HubError);
  assert.equal(partial.error.code, "STREAM_BROKEN");
  assert.equal(partial.error.message, "the source broke");
  assert.deepEqual(partial.error.details, { after: 2 });

  const crashed = await drain(client.subscribe("c07.partialCrash"));
  assert.deepEqual(crashed.values, [{ n: 1 }]);
  assert.ok(crashed.error instanceof ExecutionError);
  assert.equal(crashed.error.message, "oops");
});

test("C08 deadline: a call slower than its timeout fails with TIMEOUT and the handler sees the abort", async (t) => {
  const env = await hubFor(t, { spokes: ["c08-spoke"], clients: { "c08-client": {} } });
  const spoke = spokeOf(env, "c08-spoke");
  const state = { started: false, aborted: false };
  spoke.operation({ id: "c08.slow", type: "query" }, async (_input, ctx) => {
    state.started = true;
    state.deadline = ctx.deadline;
    await sleep(120_000, ctx.signal);
    state.aborted = ctx.signal.aborted;
    return "done";
  });
  await spoke.connect();
  const client = clientOf(env, "c08-client");

  const before = Date.now();
  await assert.rejects(client.call("c08.slow", {}, { timeoutMs: 500 }), (error) => {
    assert.ok(error instanceof TimeoutError, `${error}`);
    assert.equal(error.code, "TIMEOUT");
    return true;
  });
  assert.ok(state.started);
  assert.ok(
    state.deadline >= before + 500 && state.deadline <= Date.now() + 500,
    "the deadline is now + timeoutMs",
  );
  await waitFor(() => state.aborted, "the handler's signal");
});

test("C09 idle timeout: a subscription whose source goes quiet fails with TIMEOUT", async (t) => {
  const env = await hubFor(t, { spokes: ["c09-spoke"], clients: { "c09-client": {} } });
  const spoke = spokeOf(env, "c09-spoke");
  const state = { signalled: false, stopped: false };
  spoke.operation({ id: "c09.quiet", type: "subscription" }, async function* (_input, ctx) {
    state.idleTimeout = ctx.idleTimeout;
    try {
      yield { n: 1 };
      yield { n: 2 };
      await aborted(ctx.signal);
      state.signalled = true;
    } finally {
      state.stopped = true;
    }
  });
  await spoke.connect();
  const client = clientOf(env, "c09-client");

  const { values, error } = await drain(client.subscribe("c09.quiet", {}, { idleTimeoutMs: 500 }));
  assert.deepEqual(values, [{ n: 1 }, { n: 2 }]);
  assert.ok(error instanceof TimeoutError, `${error}`);
  await waitFor(() => state.signalled && state.stopped, "the quiet source to stop");
});

test("C10 parent call: a child call names its parent; aborting the parent aborts the child", async (t) => {
  const env = await hubFor(t, { spokes: ["c10-outer", "c10-inner"], clients: { "c10-client": {} } });
  const inner = spokeOf(env, "c10-inner");
  const child = { calls: [] };
  inner.operation({ id: "c10.inner.wait", type: "query" }, async (_input, ctx) => {
    const call = { parentRequestId: ctx.parentRequestId, aborted: false };
    child.calls.push(call);
    await aborted(ctx.signal);
    call.aborted = true;
    return null;
  });
  inner.operation({ id: "c10.inner.double", type: "query" }, (n, ctx) => ({
    doubled: n * 2,
    parent: ctx.parentRequestId,
  }));
  await inner.connect();

  const outer = spokeOf(env, "c10-outer");
  const parent = {};
  outer.operation({ id: "c10.outer.run", type: "query" }, async (input, ctx) => {
    parent.requestId = ctx.requestId;
    ctx.signal.addEventListener("abort", () => (parent.signalled = true));
    if (input.mode === "double") {
      const answer = await ctx.call("c10.inner.double", 21);
      return { ...answer, self: ctx.requestId };
    }
    try {
      return await ctx.call("c10.inner.wait", {});
    } catch (error) {
      parent.childError = error;
      throw error;
    }
  });
  await outer.connect();
  const client = clientOf(env, "c10-client");

  // A child call that ends normally names its parent.
  const doubled = await client.call("c10.outer.run", { mode: "double" });
  assert.equal(doubled.doubled, 42);
  assert.equal(doubled.parent, doubled.self);
  assert.match(doubled.parent, /^h\d+$/);

  // Aborting the parent aborts the child.
  const controller = new AbortController();
  const pending = client.call("c10.outer.run", { mode: "wait" }, { signal: controller.signal });
  await waitFor(() => child.calls.length === 1, "the child call to reach its provider");
  assert.equal(child.calls[0].parentRequestId, parent.requestId);
  controller.abort();
  await assert.rejects(pending, AbortedError);
  await waitFor(() => child.calls[0].aborted, "the child handler's signal");
  await waitFor(() => parent.signalled, "the parent handler's signal");
  await waitFor(() => parent.childError, "the parent's child call to fail");
  assert.ok(parent.childError instanceof AbortedError, `${parent.childError}`);
});

test("C11 reconnect: after a hub restart the spoke reconnects, declares again and serves", async (t) => {
  const env = await hubFor(t, { spokes: ["c11-spoke"], clients: { "c11-client": {} } });
  const spoke = spokeOf(env, "c11-spoke", { reconnect: { initialDelayMs: 100, maxDelayMs: 1000 } });
  let served = 0;
  spoke.operation({ id: "c11.ping", type: "query" }, () => ({ pong: ++served }));
  const welcomes = [];
  const disconnects = [];
  const retries = [];
  spoke.on("welcome", (welcome) => welcomes.push(welcome));
  spoke.on("disconnect", (info) => disconnects.push(info));
  spoke.on("reconnecting", (info) => retries.push(info));
  await spoke.connect();
  const client = clientOf(env, "c11-client");
  assert.deepEqual(await client.call("c11.ping"), { pong: 1 });

  await env.hub.restart();
  await waitFor(() => welcomes.length >= 2, "the spoke's second welcome", { timeoutMs: 60_000 });
  assert.equal(disconnects[0].code, 1001, "the hub closes sessions with 1001 when it shuts down");
  assert.ok(retries.length >= 1);
  assert.ok(retries.every((r) => r.delayMs >= 0 && r.delayMs <= 1000));
  assert.deepEqual(
    welcomes[1].registrations.map((r) => r.preRemapId),
    ["c11.ping"],
    "the operations are declared again",
  );
  assert.equal(spoke.state, "open");

  // The same client, reconnected too, reaches the same spoke object.
  const answer = await waitFor(
    () => client.call("c11.ping", {}, { timeoutMs: 10_000 }).catch(() => undefined),
    "a call through the restarted hub",
    { timeoutMs: 60_000, intervalMs: 200 },
  );
  assert.ok(answer.pong >= 2);
});

test("C12 supersede: a second session with the same token takes over; the first stops with 4409", async (t) => {
  const env = await hubFor(t, { spokes: ["c12-spoke"], clients: { "c12-client": {} } });
  const first = spokeOf(env, "c12-spoke", { reconnect: { initialDelayMs: 10 } });
  first.operation({ id: "c12.who", type: "query" }, () => "first");
  let retries = 0;
  first.on("reconnecting", () => retries++);
  await first.connect();

  const second = spokeOf(env, "c12-spoke");
  second.operation({ id: "c12.who", type: "query" }, () => "second");
  await second.connect();

  const info = await within(first.closed, 20_000, "the first session to close");
  assert.equal(info.code, 4409);
  assert.match(info.reason, /superseded/);
  await sleep(500);
  assert.equal(retries, 0, "the superseded spoke does not reconnect");
  assert.equal(first.state, "closed");
  assert.equal(second.state, "open");
  const client = clientOf(env, "c12-client");
  assert.equal(await client.call("c12.who"), "second");
});

test("C13 errors by code: typed errors for the hub's codes", async (t) => {
  const env = await hubFor(t, { spokes: ["c13-spoke", "c13-leaver"], clients: { "c13-client": {} } });
  const spoke = spokeOf(env, "c13-spoke");
  spoke.operation(
    {
      id: "c13.typed",
      type: "query",
      input: { type: "object", properties: { n: { type: "integer" } }, required: ["n"] },
    },
    ({ n }) => n,
  );
  spoke.operation({ id: "c13.secret", type: "query", access: "scoped", requiredScopes: ["secret"] }, () => 1);
  spoke.operation({ id: "c13.internal", type: "query", access: "internal" }, () => 1);
  await spoke.connect();
  const leaver = spokeOf(env, "c13-leaver");
  leaver.operation({ id: "c13.gone", type: "query" }, () => 1);
  await leaver.connect();
  await leaver.close();
  const client = clientOf(env, "c13-client");
  // The leaver's provider leaves the catalog as its session ends.
  await waitFor(
    () => client.call("c13.gone").catch((error) => error.code !== "PROVIDER_GONE"),
    "the departed provider to leave the catalog",
  );

  const expectations = [
    ["c13.nope", {}, OperationNotFoundError, "OPERATION_NOT_FOUND"],
    ["c13.internal", {}, OperationNotFoundError, "OPERATION_NOT_FOUND"],
    ["c13.gone", {}, NoProviderError, "NO_PROVIDER"],
    ["c13.typed", { n: "seven" }, ValidationError, "VALIDATION_ERROR"],
    ["c13.secret", {}, AccessDeniedError, "ACCESS_DENIED"],
  ];
  for (const [operationId, input, Class, code] of expectations) {
    await assert.rejects(client.call(operationId, input), (error) => {
      assert.ok(error instanceof Class, `${operationId}: ${error}`);
      assert.ok(error instanceof HubError);
      assert.equal(error.code, code);
      assert.equal(typeof error.message, "string");
      return true;
    });
  }
  const invalid = await client.call("c13.typed", { n: "seven" }).catch((error) => error);
  assert.ok(Array.isArray(invalid.details.errors) && invalid.details.errors.length > 0);
  assert.equal(invalid.details.errors[0].instancePath, "/n");
  assert.equal(typeof invalid.details.errors[0].message, "string");
  assert.equal(await client.call("c13.typed", { n: 7 }), 7);
});

test("C14 heartbeat: with a short heartbeat an idle peer stays connected", async (t) => {
  const env = await hubFor(t, {
    spokes: ["c14-spoke"],
    clients: { "c14-client": {} },
    config: { limits: { heartbeat_ms: 200 } },
  });
  const spoke = spokeOf(env, "c14-spoke");
  spoke.operation({ id: "c14.ping", type: "query" }, () => "pong");
  const client = clientOf(env, "c14-client");
  const drops = [];
  for (const peer of [spoke, client]) peer.on("disconnect", (info) => drops.push(info));
  const spokeWelcome = await spoke.connect();
  const clientWelcome = await client.connect();
  assert.equal(spokeWelcome.heartbeatMs, 200);

  // A peer that does not answer pings is dropped (1011) within a few
  // intervals: the hub really pings at this rate.
  const silent = new WebSocket(env.hub.url.replace("http", "ws") + "/v1/clients/connect", {
    autoPong: false,
  });
  silent.on("open", () =>
    silent.send(JSON.stringify({ type: "hello", payload: { token: env.tokens["c14-client"] } })),
  );
  const silentClose = await within(
    new Promise((resolve) => silent.on("close", (code) => resolve(code))),
    20_000,
    "the hub to drop a peer that does not answer pings",
  );
  assert.equal(silentClose, 1011);

  await sleep(2_000); // ten intervals, idle
  assert.deepEqual(drops, []);
  assert.equal(spoke.state, "open");
  assert.equal(client.state, "open");
  assert.equal(spoke.welcome, spokeWelcome);
  assert.equal(client.welcome, clientWelcome);
  assert.equal(await client.call("c14.ping"), "pong");
});

test("C15 HTTP: httpCall and httpSubscribe, errors typed as over WebSocket", async (t) => {
  const env = await hubFor(t, { spokes: ["c15-spoke"], clients: { "c15-client": {} } });
  const spoke = spokeOf(env, "c15-spoke");
  spoke.operation({ id: "c15.echo", type: "query" }, (input) => input);
  spoke.operation({ id: "c15.open", type: "query", access: "public" }, () => "anyone");
  spoke.operation(
    { id: "c15.typed", type: "query", input: { type: "object", required: ["n"] } },
    ({ n }) => n,
  );
  spoke.operation({ id: "c15.slow", type: "query" }, async (_input, ctx) => {
    await sleep(120_000, ctx.signal);
    return null;
  });
  const ticks = {};
  spoke.operation({ id: "c15.ticks", type: "subscription" }, async function* ({ count, key }, ctx) {
    const state = (ticks[key] = { stopped: false });
    try {
      for (let tick = 1; tick <= count; tick++) {
        yield { tick };
        await sleep(5, ctx.signal);
      }
    } finally {
      state.stopped = true;
    }
  });
  spoke.operation({ id: "c15.broken", type: "subscription" }, async function* () {
    yield { n: 1 };
    throw new HubError("SOURCE_FAILED", "the source failed", { at: 2 });
  });
  await spoke.connect();
  const base = env.hub.url;
  const token = env.tokens["c15-client"];

  assert.deepEqual(await httpCall(base, token, "c15.echo", { hello: "world" }), { hello: "world" });
  assert.deepEqual(await httpCall(base, token, "c15.echo", [1]), [1]);
  assert.equal(await httpCall(base, null, "c15.open"), "anyone");

  const events = await drain(httpSubscribe(base, token, "c15.ticks", { count: 4, key: "all" }));
  assert.deepEqual(events, { values: [1, 2, 3, 4].map((tick) => ({ tick })) });

  const broken = await drain(httpSubscribe(base, token, "c15.broken"));
  assert.deepEqual(broken.values, [{ n: 1 }]);
  assert.equal(broken.error.constructor, HubError);
  assert.equal(broken.error.code, "SOURCE_FAILED");
  assert.deepEqual(broken.error.details, { at: 2 });

  // Leaving the loop closes the stream, which stops the source.
  for await (const event of httpSubscribe(base, token, "c15.ticks", { count: 1_000_000, key: "early" })) {
    if (event.tick === 2) break;
  }
  await waitFor(() => ticks.early?.stopped, "the source of a closed stream to stop");

  const failures = [
    [() => httpCall(base, token, "c15.nope"), OperationNotFoundError],
    [
      () => drain(httpSubscribe(base, token, "c15.nope")).then((r) => Promise.reject(r.error)),
      OperationNotFoundError,
    ],
    [() => httpCall(base, null, "c15.echo", 1), UnauthenticatedError],
    [() => httpCall(base, "alk_client_wrong", "c15.open"), UnauthenticatedError],
    [() => httpCall(base, token, "c15.typed", { m: 1 }), ValidationError],
    [() => httpCall(base, token, "c15.slow", null, { timeoutMs: 500 }), TimeoutError],
  ];
  for (const [attempt, Class] of failures) {
    await assert.rejects(attempt(), (error) => {
      assert.ok(error instanceof Class, `expected ${Class.name}, got ${error}`);
      assert.equal(error.code, Class.code);
      return true;
    });
  }
  const invalid = await httpCall(base, token, "c15.typed", { m: 1 }).catch((error) => error);
  assert.ok(Array.isArray(invalid.details.errors) && invalid.details.errors.length > 0);

  const controller = new AbortController();
  const pending = httpCall(base, token, "c15.slow", null, { signal: controller.signal });
  await sleep(100);
  controller.abort();
  await assert.rejects(pending, AbortedError);
});
