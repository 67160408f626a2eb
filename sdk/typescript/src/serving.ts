/**
 * Serving one call delivered by the hub: runs the operation's handler,
 * sends its result, events or error, and stops it when the call is aborted.
 *
 * @module
 */

import { call, subscribe, type CallOptions, type SessionSource } from "./calls.js";
import { HubError } from "./errors.js";
import type { CallRequest, Envelope, ErrorPayload } from "./frames.js";
import type { CallContext, DeclaredOperation, QueryHandler, SubscriptionHandler } from "./operations.js";

/** What serving a call needs from its session. */
export interface ServeOptions {
  /** Sends one frame; the session drops it once the connection is gone. */
  send(type: string, payload: object): void;
  /** The session the call came in on, for the handler's child calls. */
  source: SessionSource;
  /**
   * Resolves once the connection can take more: lets incoming frames (an
   * abort) in, and waits while too much is queued for the hub.
   */
  drained(): Promise<void>;
  /** Called once the call is over, whichever way it ended. */
  done(): void;
}

/** A call being served. */
export interface ServedCall {
  /** Stops the handler: its signal fires with `reason`; nothing more is sent. */
  abort(reason: HubError): void;
}

/** Starts serving `request` with `operation`. */
export function serveCall(
  operation: DeclaredOperation,
  request: CallRequest,
  options: ServeOptions,
): ServedCall {
  const controller = new AbortController();
  const { signal } = controller;
  const requestId = request.requestId;
  const send = (type: string, payload: object) => {
    if (!signal.aborted) options.send(type, { requestId, ...payload });
  };
  const respond = (data: unknown) => send("call.responded", { output: envelope(data) });
  const ctx = context(request, signal, options.source);

  const run = async () => {
    const input = await operation.parseInput(request.input);
    if (operation.type === "subscription") {
      const source = await (operation.handler as SubscriptionHandler)(input, ctx);
      if (await relay(source, signal, respond, options.drained)) send("call.completed", {});
    } else {
      respond(await (operation.handler as QueryHandler)(input, ctx));
    }
  };
  run()
    .catch((error: unknown) => send("call.error", errorPayload(error)))
    .finally(options.done);
  return { abort: (reason) => controller.abort(reason) };
}

/** The envelope of one result; the hub fills in its `meta`. */
function envelope(data: unknown): Envelope {
  return { data: data === undefined ? null : data };
}

/**
 * A source that never waits would keep the event loop to itself: every this
 * many events, the relay lets other work in (see `ServeOptions.drained`).
 */
const YIELD_EVERY = 64;

/**
 * Sends each value of `source` until it ends (true) or `signal` aborts
 * (false; the source is then stopped with `return()`).
 */
async function relay(
  source: AsyncIterable<unknown> | Iterable<unknown>,
  signal: AbortSignal,
  emit: (value: unknown) => void,
  drained: () => Promise<void>,
): Promise<boolean> {
  const iterator = iteratorOf(source);
  let sent = 0;
  const aborted = new Promise<"aborted">((resolve) => {
    if (signal.aborted) resolve("aborted");
    signal.addEventListener("abort", () => resolve("aborted"), { once: true });
  });
  for (;;) {
    const next = Promise.resolve(iterator.next());
    next.catch(() => undefined); // an error after the abort has no one to go to
    const step = await Promise.race([next, aborted]);
    if (step === "aborted") {
      Promise.resolve(iterator.return?.()).catch(() => undefined);
      return false;
    }
    if (step.done) return true;
    emit(step.value);
    if (++sent % YIELD_EVERY === 0) await drained();
  }
}

function iteratorOf(source: unknown): AsyncIterator<unknown> | Iterator<unknown> {
  const iterable = source as Partial<AsyncIterable<unknown> & Iterable<unknown>> | null;
  const iterator = iterable?.[Symbol.asyncIterator]?.() ?? iterable?.[Symbol.iterator]?.();
  if (!iterator) throw new TypeError("a subscription handler must return an async iterable");
  return iterator;
}

function context(request: CallRequest, signal: AbortSignal, source: SessionSource): CallContext {
  const child = (options: Omit<CallOptions, "parentRequestId"> = {}): CallOptions => ({
    ...options,
    parentRequestId: request.requestId,
  });
  return {
    requestId: request.requestId,
    operationId: request.operationId,
    parentRequestId: request.parentRequestId,
    identity: request.identity,
    metadata: request.metadata ?? {},
    deadline: request.deadline,
    signal,
    call: (operationId, input, options) => call(source, operationId, input, child(options)),
    subscribe: (operationId, input, options) => subscribe(source, operationId, input, child(options)),
  };
}

/**
 * The `call.error` fields of a handler's failure: a {@link HubError} keeps
 * its code and details; anything else is sent without a code, which the hub
 * reports as `EXECUTION_ERROR`.
 */
function errorPayload(error: unknown): ErrorPayload {
  if (error instanceof HubError) {
    const payload: ErrorPayload = { code: error.code, message: error.message };
    if (error.details !== undefined) payload.details = error.details;
    return payload;
  }
  return { message: error instanceof Error ? error.message : String(error) };
}
