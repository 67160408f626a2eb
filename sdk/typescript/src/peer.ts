/**
 * A peer of the hub: one logical connection that declares operations and
 * serves them, calls and subscribes, and reconnects with backoff when the
 * connection drops (but never after close code 4401 or 4409).
 * {@link Spoke} and {@link Client} are peers on the spokes and clients
 * endpoints.
 *
 * @module
 */

import {
  backoffDelay,
  reconnectPolicy,
  sleep,
  type ReconnectOptions,
  type ReconnectPolicy,
} from "./backoff.js";
import {
  call,
  subscribe,
  type CallChannel,
  type CallOptions,
  type SessionSource,
  type Subscription,
} from "./calls.js";
import { ConnectionClosedError, TimeoutError, abortedByCaller, type HubError } from "./errors.js";
import { Emitter } from "./events.js";
import type { Welcome } from "./frames.js";
import {
  declareOperation,
  type DeclaredOperation,
  type Infer,
  type OperationDefinition,
  type QueryHandler,
  type SchemaLike,
  type SubscriptionHandler,
} from "./operations.js";
import { Session, type SessionEnd } from "./session.js";
import { defaultWebSocket, type WebSocketConstructor } from "./transport.js";
import { webSocketUrl, type Endpoint } from "./url.js";

/** How a peer connects. */
export interface PeerOptions {
  /**
   * The hub: its HTTP base URL (`http://127.0.0.1:7700`), from which the
   * endpoint's WebSocket URL is derived, or that WebSocket URL itself.
   */
  url: string;
  /** The spoke or client token, sent in `hello`. */
  token: string;
  /** Display name for this session. */
  name?: string;
  /** Labels merged over the principal's stored ones (string values). */
  labels?: Record<string, string>;
  /**
   * How to reconnect after the connection drops or cannot be opened;
   * `false` never reconnects. Default: {@link ReconnectOptions}' defaults.
   */
  reconnect?: ReconnectOptions | false;
  /**
   * Longest wait from opening a connection to the hub's `welcome`, ms
   * (default 15000); past it the attempt counts as failed.
   */
  connectTimeoutMs?: number;
  /** A WebSocket implementation to use instead of the platform's (the global one, else `ws`). */
  WebSocket?: WebSocketConstructor;
}

/** Where a peer is in its life. */
export type PeerState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

/** Close codes after which a peer does not reconnect (docs/protocol.md §1). */
export const FINAL_CLOSE_CODES: ReadonlySet<number> = new Set([
  4401, // unauthenticated: the token is wrong, removed or disabled
  4409, // superseded: a newer session of this spoke took over; coming back would take over back
]);

/** How a connection, or the peer for good, ended. */
export interface CloseInfo {
  /** The WebSocket close code (1006: the connection failed or dropped). */
  code: number;
  reason: string;
  /**
   * Why, when there is more to say: the hub's refusal (`UnauthenticatedError`
   * for 4401, `OverloadedError` for a session cap) or a declaration that
   * could not be prepared.
   */
  error?: Error;
}

/** A reconnect about to happen. */
export interface ReconnectInfo {
  /** 1 for the first retry after a loss, counting up while attempts fail. */
  attempt: number;
  /** The wait before it, ms. */
  delayMs: number;
  /** How the previous connection ended. */
  code: number;
  reason: string;
}

/** Events of a peer and their values. */
export interface PeerEvents {
  /** A connection was accepted (after every reconnect, too). */
  welcome: Welcome;
  /** An accepted connection ended. */
  disconnect: CloseInfo;
  /** The peer waits before connecting again. */
  reconnecting: ReconnectInfo;
  /** The hub reported a connection-level problem (an `error` event). */
  error: HubError;
  /** The peer stopped for good; `closed` resolves with the same value. */
  close: CloseInfo;
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}

/**
 * The shared core of {@link Spoke} and {@link Client}: use those.
 *
 * Calls made while the peer is not connected wait for the connection (up
 * to their `timeoutMs` or `signal`); calls in flight when a connection drops
 * fail with `ConnectionClosedError`, and handlers being served see their
 * signal fire.
 */
export class Peer {
  /** Resolves when the peer stops for good: `close()`, close code 4401 or 4409, or reconnecting given up. */
  readonly closed: Promise<CloseInfo>;

  #url: string;
  #options: PeerOptions;
  #policy: ReconnectPolicy | undefined;
  #operations = new Map<string, DeclaredOperation>();
  #events = new Emitter<PeerEvents>();
  #state: PeerState = "idle";
  #session: Session | undefined;
  #welcome: Welcome | undefined;
  #ready = deferred<Session>();
  #stop = new AbortController();
  #closed = deferred<CloseInfo>();

  protected constructor(endpoint: Endpoint, options: PeerOptions) {
    if (typeof options.token !== "string" || options.token === "") {
      throw new TypeError("a token is required");
    }
    this.#url = webSocketUrl(options.url, endpoint);
    this.#options = options;
    this.#policy = options.reconnect === false ? undefined : reconnectPolicy(options.reconnect);
    this.closed = this.#closed.promise;
  }

  /** The `welcome` of the current (or last) connection. */
  get welcome(): Welcome | undefined {
    return this.#welcome;
  }

  /** Where the peer is in its life. */
  get state(): PeerState {
    return this.#state;
  }

  /** Listens to an event; returns the function that stops listening. */
  on<K extends keyof PeerEvents>(event: K, listener: (value: PeerEvents[K]) => void): () => void {
    return this.#events.on(event, listener);
  }

  /**
   * Declares an operation this peer serves, before `connect()`. A query or
   * mutation handler returns its result; a subscription handler returns an
   * async iterable (an `async function*`) of events. Throw a `HubError` to
   * answer with its code; any other error is reported as `EXECUTION_ERROR`.
   */
  operation<I extends SchemaLike, O extends SchemaLike>(
    definition: OperationDefinition<I, O> & { type: "subscription" },
    handler: SubscriptionHandler<Infer<I>, Infer<O>>,
  ): this;
  operation<I extends SchemaLike, O extends SchemaLike>(
    definition: OperationDefinition<I, O> & { type: "query" | "mutation" },
    handler: QueryHandler<Infer<I>, Infer<O>>,
  ): this;
  operation(definition: OperationDefinition, handler: QueryHandler | SubscriptionHandler): this {
    if (this.#state !== "idle") throw new Error("declare operations before connect()");
    const operation = declareOperation(definition, handler);
    if (this.#operations.has(operation.id)) throw new Error(`operation ${operation.id} is declared twice`);
    this.#operations.set(operation.id, operation);
    return this;
  }

  /**
   * Connects (once; later calls wait for the same connection) and resolves
   * with the `welcome`. While reconnecting is allowed, a hub that cannot be
   * reached is tried again with backoff; a refused token rejects at once
   * with `UnauthenticatedError`.
   */
  connect(): Promise<Welcome> {
    if (this.#state === "idle") {
      this.#state = "connecting";
      void this.#run();
    }
    return this.#ready.promise.then((session) => session.welcome!);
  }

  /** Calls a query or mutation; resolves to the `data` of its result. */
  call<T = any>(operationId: string, input?: unknown, options: CallOptions = {}): Promise<T> {
    return call<T>(this.#source, operationId, input, options);
  }

  /**
   * Subscribes to a subscription: iterate the result with `for await`;
   * leaving the loop early aborts the call.
   */
  subscribe<T = any>(operationId: string, input?: unknown, options: CallOptions = {}): Subscription<T> {
    return subscribe<T>(this.#source, operationId, input, options);
  }

  /** Closes the connection and stops reconnecting; resolves like `closed`. */
  close(): Promise<CloseInfo> {
    if (this.#state === "idle") this.#finish(closedByPeer());
    this.#stop.abort();
    this.#session?.close(1000, closedByPeer().reason);
    return this.closed;
  }

  #source: SessionSource = (signal, deadline) => {
    if (this.#state === "idle") this.connect().catch(() => undefined);
    return within(this.#ready.promise as Promise<CallChannel>, signal, deadline);
  };

  async #run(): Promise<void> {
    let operations;
    let WebSocket;
    try {
      operations = await Promise.all([...this.#operations.values()].map((operation) => operation.spec()));
      WebSocket = this.#options.WebSocket ?? (await defaultWebSocket());
    } catch (error) {
      const cause = error instanceof Error ? error : new Error(String(error));
      return this.#finish({ code: 1000, reason: `cannot start: ${cause.message}`, error: cause });
    }
    const hello = { token: this.#options.token, operations, ...this.#identity() };
    let attempt = 0;
    while (!this.#stop.signal.aborted) {
      const session = new Session({
        url: this.#url,
        WebSocket,
        hello,
        welcomeTimeoutMs: this.#options.connectTimeoutMs ?? 15_000,
        operations: this.#operations,
        onError: (error) => this.#events.emit("error", error),
      });
      this.#session = session;
      session.welcomed.then(
        (welcome) => {
          this.#welcome = welcome;
          this.#state = "open";
          this.#ready.resolve(session);
          this.#events.emit("welcome", welcome);
        },
        () => undefined,
      );
      const end = await session.ended;
      this.#session = undefined;
      if (end.welcome) {
        attempt = 0;
        this.#ready = deferred();
        this.#events.emit("disconnect", closeInfo(end));
      }
      if (this.#stop.signal.aborted) break;
      if (FINAL_CLOSE_CODES.has(end.code) || !this.#policy || attempt >= this.#policy.maxAttempts) {
        return this.#finish(closeInfo(end));
      }
      const delayMs = backoffDelay(this.#policy, attempt++);
      this.#state = "reconnecting";
      this.#events.emit("reconnecting", { attempt, delayMs, code: end.code, reason: end.reason });
      await sleep(delayMs, this.#stop.signal);
    }
    this.#finish(closedByPeer());
  }

  #identity(): { name?: string; labels?: Record<string, string> } {
    const { name, labels } = this.#options;
    return { ...(name === undefined ? {} : { name }), ...(labels === undefined ? {} : { labels }) };
  }

  #finish(info: CloseInfo): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    this.#ready.reject(
      info.error ??
        new ConnectionClosedError(
          `the peer is closed (code ${info.code}${info.reason ? `: ${info.reason}` : ""})`,
        ),
    );
    this.#closed.resolve(info);
    this.#events.emit("close", info);
  }
}

function closedByPeer(): CloseInfo {
  return { code: 1000, reason: "closed by the peer" };
}

function closeInfo(end: SessionEnd): CloseInfo {
  return end.error
    ? { code: end.code, reason: end.reason, error: end.error }
    : { code: end.code, reason: end.reason };
}

/**
 * `promise`, unless `signal` aborts first (`AbortedError`) or `deadline`
 * passes first (`TimeoutError`).
 */
function within<T>(
  promise: Promise<T>,
  signal: AbortSignal | undefined,
  deadline: number | undefined,
): Promise<T> {
  if (signal?.aborted) return Promise.reject(abortedByCaller(signal));
  if (!signal && deadline === undefined) return promise;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      cleanup();
      reject(abortedByCaller(signal!));
    };
    const timer =
      deadline === undefined
        ? undefined
        : setTimeout(
            () => {
              cleanup();
              reject(
                new TimeoutError("the call's deadline passed while waiting for the connection to the hub"),
              );
            },
            Math.max(0, deadline - Date.now()),
          );
    const cleanup = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        cleanup();
        resolve(value);
      },
      (error: unknown) => {
        cleanup();
        reject(error);
      },
    );
  });
}
