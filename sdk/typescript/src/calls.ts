/**
 * Calls this peer makes: `call` (one result) and `subscribe` (a stream of
 * results as an async iterable), over whichever session a
 * {@link SessionSource} hands out.
 *
 * @module
 */

import { ConnectionClosedError, ExecutionError, HubError, TimeoutError, abortedByCaller } from "./errors.js";
import type { CallRequestOut, Envelope } from "./frames.js";

/** Options of a call or a subscription. */
export interface CallOptions {
  /** Aborting it aborts the call (`call.aborted`); the call then fails with `AbortedError`. */
  signal?: AbortSignal;
  /**
   * Time the call may take, ms; sent as the absolute `deadline` (now plus
   * this), which the hub enforces with `TIMEOUT`. It also bounds the wait for
   * a connection while the peer reconnects, and a call still unanswered 2 s
   * past its deadline (a connection lost without a close) fails with
   * `TimeoutError` on this side.
   */
  timeoutMs?: number;
  /** Longest wait for the next event (for a query: for the answer), ms; sent as `idleTimeout`. */
  idleTimeoutMs?: number;
  /** The hub id of the call this one serves (handlers get it set by `ctx.call`). */
  parentRequestId?: string;
  /** String values routing policies may read (`metadata`). */
  metadata?: Record<string, string>;
}

/** Where one call's events go. */
export interface CallSink {
  responded(output: unknown): void;
  completed(): void;
  failed(error: HubError): void;
}

/** The handle of a call in flight on a session. */
export interface OpenCall {
  /** Stops waiting for the call's events and, if it is still open, tells the hub (`call.aborted`). */
  abort(): void;
  /** Stops waiting for the call's events without telling the hub. */
  forget(): void;
}

/** The connection a call goes over. */
export interface CallChannel {
  /** Sends `call.requested` for `request` and routes its events to `sink`. */
  start(request: Omit<CallRequestOut, "requestId">, sink: CallSink): OpenCall;
}

/**
 * Hands out a ready connection for a call, waiting for one if need be. It
 * rejects with a {@link HubError} when `signal` aborts (`AbortedError`), when
 * `deadline` (ms since the Unix epoch) passes first (`TimeoutError`), or when
 * the peer is closed (`ConnectionClosedError`).
 */
export type SessionSource = (
  signal: AbortSignal | undefined,
  deadline: number | undefined,
) => Promise<CallChannel>;

/** The `data` of a response envelope. */
function dataOf(output: unknown): unknown {
  return (output as Envelope | null)?.data;
}

function requestOf(
  operationId: string,
  input: unknown,
  options: CallOptions,
  deadline: number | undefined,
): Omit<CallRequestOut, "requestId"> {
  const request: Omit<CallRequestOut, "requestId"> = { operationId };
  if (input !== undefined) request.input = input;
  if (options.parentRequestId !== undefined) request.parentRequestId = options.parentRequestId;
  if (deadline !== undefined) request.deadline = deadline;
  if (options.idleTimeoutMs !== undefined) request.idleTimeout = wholeMs(options.idleTimeoutMs);
  if (options.metadata !== undefined) request.metadata = options.metadata;
  return request;
}

function deadlineOf(options: CallOptions): number | undefined {
  return options.timeoutMs === undefined ? undefined : Date.now() + wholeMs(options.timeoutMs);
}

/** A duration as the wire takes it: a non-negative integer of milliseconds. */
export function wholeMs(ms: number): number {
  return Math.max(0, Math.ceil(ms));
}

/**
 * Past the deadline the hub answers `TIMEOUT`; a caller that has heard
 * nothing this long after it gives up on its own (the connection may be
 * gone without a close).
 */
const LATE_ANSWER_GRACE_MS = 2000;

/**
 * Ends a call early on the caller's side: when `signal` aborts
 * (`AbortedError`), or when it is still open well past `deadline`
 * (`TimeoutError`). Returns what stops watching.
 */
function watchCall(
  signal: AbortSignal | undefined,
  deadline: number | undefined,
  end: (error: HubError) => void,
): () => void {
  const onAbort = () => end(abortedByCaller(signal!));
  signal?.addEventListener("abort", onAbort, { once: true });
  const timer =
    deadline === undefined
      ? undefined
      : setTimeout(
          () => end(new TimeoutError("no answer from the hub by the call's deadline")),
          Math.max(0, deadline - Date.now()) + LATE_ANSWER_GRACE_MS,
        );
  return () => {
    signal?.removeEventListener("abort", onAbort);
    clearTimeout(timer);
  };
}

/** Calls a query or mutation; resolves to the `data` of its result. */
export async function call<T>(
  source: SessionSource,
  operationId: string,
  input: unknown,
  options: CallOptions,
): Promise<T> {
  const deadline = deadlineOf(options);
  const { signal } = options;
  const channel = await source(signal, deadline);
  return new Promise<T>((resolve, reject) => {
    if (signal?.aborted) return reject(abortedByCaller(signal));
    const open = channel.start(requestOf(operationId, input, options, deadline), {
      responded(output) {
        // One result ends a query; later events (of a subscription called
        // this way) are not awaited.
        open.forget();
        unwatch();
        resolve(dataOf(output) as T);
      },
      completed() {
        unwatch();
        reject(new ExecutionError("the call completed without a result"));
      },
      failed(error) {
        unwatch();
        reject(error);
      },
    });
    const unwatch = watchCall(signal, deadline, (error) => {
      unwatch();
      open.abort();
      reject(error);
    });
  });
}

/** Subscribes; events flow into the returned {@link Subscription}. */
export function subscribe<T>(
  source: SessionSource,
  operationId: string,
  input: unknown,
  options: CallOptions,
): Subscription<T> {
  const deadline = deadlineOf(options);
  const { signal } = options;
  return new Subscription<T>((sink) => {
    let open: OpenCall | undefined;
    let unwatch: (() => void) | undefined;
    let stopped = false;
    source(signal, deadline).then(
      (channel) => {
        if (stopped) return;
        if (signal?.aborted) return sink.failed(abortedByCaller(signal));
        open = channel.start(requestOf(operationId, input, options, deadline), sink);
        unwatch = watchCall(signal, deadline, sink.failed);
      },
      (error: unknown) => sink.failed(asHubError(error)),
    );
    return () => {
      stopped = true;
      unwatch?.();
      open?.abort();
    };
  });
}

function asHubError(error: unknown): HubError {
  return error instanceof HubError
    ? error
    : new ConnectionClosedError(error instanceof Error ? error.message : String(error), undefined, {
        cause: error,
      });
}

/**
 * The results of a subscription, in order: iterate with `for await`. The
 * loop ends after the provider's `call.completed`, throws the call's error
 * (after every event that came before it), and aborts the call when left
 * early (`break`, `return`, a throw in the loop body).
 *
 * Results arriving faster than they are read are buffered.
 */
export class Subscription<T = unknown> implements AsyncIterable<T> {
  #buffer: T[] = [];
  #end: { error?: HubError } | undefined;
  #wake: (() => void) | undefined;
  #stop: () => void;

  /**
   * @internal `start` receives the sink events go to and returns what stops
   * the call at the hub.
   */
  constructor(start: (sink: CallSink) => () => void) {
    this.#stop = start({
      responded: (output) => {
        if (this.#end) return;
        this.#buffer.push(dataOf(output) as T);
        this.#notify();
      },
      completed: () => this.#finish({}),
      failed: (error) => this.#finish({ error }),
    });
  }

  /** Stops the subscription (`call.aborted`); iteration ends after the buffered results. */
  abort(): void {
    this.#finish({});
  }

  /** The next result; `done` after the stream ended. */
  async next(): Promise<IteratorResult<T, undefined>> {
    for (;;) {
      if (this.#buffer.length > 0) return { done: false, value: this.#buffer.shift()! };
      if (this.#end) {
        const { error } = this.#end;
        this.#end = {};
        if (error) throw error;
        return { done: true, value: undefined };
      }
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<T, undefined> {
    return {
      next: () => this.next(),
      return: async () => {
        this.abort();
        this.#buffer = [];
        return { done: true, value: undefined };
      },
    };
  }

  #finish(end: { error?: HubError }): void {
    if (this.#end) return;
    this.#end = end;
    this.#stop();
    this.#notify();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}
