/**
 * One WebSocket connection to the hub, from `hello` to its close: the
 * `welcome`, the calls this peer makes over it and the calls it serves.
 * Reconnecting is the {@link Peer}'s business; a session never outlives its
 * socket.
 *
 * @module
 */

import type { CallChannel, CallSink, OpenCall, SessionSource } from "./calls.js";
import {
  AbortedError,
  ConnectionClosedError,
  UnauthenticatedError,
  errorFromPayload,
  type HubError,
} from "./errors.js";
import {
  decodeFrame,
  encodeFrame,
  type CallRequest,
  type CallRequestOut,
  type OperationSpec,
  type Welcome,
} from "./frames.js";
import type { DeclaredOperation } from "./operations.js";
import { serveCall, type ServedCall } from "./serving.js";
import { openSocket, type Socket, type WebSocketConstructor } from "./transport.js";

/** Bytes queued for the hub past which served subscriptions wait before sending more. */
const HIGH_WATER = 1024 * 1024;

/** What a session is opened with. */
export interface SessionOptions {
  url: string;
  WebSocket: WebSocketConstructor;
  /** The `hello` payload: token, name, labels, operations. */
  hello: { token: string; name?: string; labels?: Record<string, string>; operations: OperationSpec[] };
  /** Longest wait from opening the connection to the `welcome`, ms. */
  welcomeTimeoutMs: number;
  /** The handlers of the declared operations, by declared id. */
  operations: ReadonlyMap<string, DeclaredOperation>;
  /** Connection-level `error` events that arrive after `welcome`. */
  onError(error: HubError): void;
}

/** How a session ended. */
export interface SessionEnd {
  /** The WebSocket close code (1006 when the connection failed or dropped). */
  code: number;
  reason: string;
  /** The hub's `error` event before `welcome` (`UNAUTHENTICATED`, `OVERLOADED`), if any. */
  error?: HubError;
  /** The session's `welcome`, if it got that far. */
  welcome?: Welcome;
}

/** One connection to the hub. */
export class Session implements CallChannel {
  /** Resolves when the connection is closed. */
  readonly ended: Promise<SessionEnd>;
  /** Resolves with the `welcome`; rejects if the session ends before it. */
  readonly welcomed: Promise<Welcome>;

  #socket: Socket;
  #welcome: Welcome | undefined;
  #refusal: HubError | undefined;
  #welcomeTimer: ReturnType<typeof setTimeout>;
  #gaveUp: string | undefined;
  #closed = false;
  #nextId = 1;
  #calls = new Map<string, CallSink>();
  #serving = new Map<string, ServedCall>();
  #options: SessionOptions;

  constructor(options: SessionOptions) {
    this.#options = options;
    let welcomed!: (welcome: Welcome) => void;
    let refused!: (error: HubError) => void;
    let ended!: (end: SessionEnd) => void;
    this.welcomed = new Promise((resolve, reject) => ((welcomed = resolve), (refused = reject)));
    this.welcomed.catch(() => undefined);
    this.ended = new Promise((resolve) => (ended = resolve));
    this.#welcomeTimer = setTimeout(() => {
      this.#gaveUp = `no welcome within ${options.welcomeTimeoutMs} ms`;
      this.close(1000, this.#gaveUp);
    }, options.welcomeTimeoutMs);
    this.#socket = openSocket(options.WebSocket, options.url, {
      open: () => this.#send("hello", options.hello),
      text: (text) => {
        const welcome = this.#onText(text);
        if (welcome) welcomed(welcome);
      },
      close: (code, reason) => {
        const end = this.#onClose(code, reason);
        if (!end.welcome) refused(end.error ?? closedError(code, reason));
        ended(end);
      },
    });
  }

  /** The `welcome`, once it arrived. */
  get welcome(): Welcome | undefined {
    return this.#welcome;
  }

  /** Starts the closing handshake. */
  close(code = 1000, reason = "closed by the peer"): void {
    this.#socket.close(code, reason);
  }

  /** This session as a {@link SessionSource}: calls use it, never another. */
  readonly source: SessionSource = () =>
    this.#closed
      ? Promise.reject(new ConnectionClosedError("the connection to the hub is closed"))
      : Promise.resolve(this);

  start(request: Omit<CallRequestOut, "requestId">, sink: CallSink): OpenCall {
    const requestId = `c-${this.#nextId++}`;
    const forget = () => void this.#calls.delete(requestId);
    if (this.#closed || !this.#send("call.requested", { requestId, ...request })) {
      queueMicrotask(() => sink.failed(new ConnectionClosedError("the connection to the hub is closed")));
      return { abort: () => undefined, forget: () => undefined };
    }
    this.#calls.set(requestId, sink);
    return {
      abort: () => {
        if (this.#calls.delete(requestId)) this.#send("call.aborted", { requestId });
      },
      forget,
    };
  }

  #send(type: string, payload: object): boolean {
    return this.#socket.send(encodeFrame(type, payload));
  }

  /** Handles one message; returns the `welcome` when this is it. */
  #onText(text: string): Welcome | undefined {
    const frame = decodeFrame(text);
    if (!frame) return undefined;
    const { type, payload } = frame;
    const requestId = typeof payload.requestId === "string" ? payload.requestId : "";
    switch (type) {
      case "welcome":
        return this.#onWelcome(payload as unknown as Welcome);
      case "error": {
        const error = errorFromPayload(payload);
        if (this.#welcome) this.#options.onError(error);
        else this.#refusal = error;
        return undefined;
      }
      case "call.requested":
        this.#serve(payload as unknown as CallRequest);
        return undefined;
      case "call.aborted":
        this.#serving.get(requestId)?.abort(abortedByHub());
        return undefined;
      case "call.responded":
        this.#calls.get(requestId)?.responded(payload.output);
        return undefined;
      case "call.completed":
      case "call.error": {
        const sink = this.#calls.get(requestId);
        this.#calls.delete(requestId);
        if (type === "call.completed") sink?.completed();
        else sink?.failed(errorFromPayload(payload));
        return undefined;
      }
      default:
        return undefined;
    }
  }

  #onWelcome(welcome: Welcome): Welcome | undefined {
    if (this.#welcome) return undefined;
    clearTimeout(this.#welcomeTimer);
    this.#welcome = welcome;
    return welcome;
  }

  #serve(request: CallRequest): void {
    const { requestId, operationId } = request;
    if (typeof requestId !== "string" || this.#serving.has(requestId)) return;
    const operation = this.#options.operations.get(operationId);
    if (!operation) {
      this.#send("call.error", {
        requestId,
        code: "OPERATION_NOT_FOUND",
        message: `this peer does not serve ${operationId}`,
      });
      return;
    }
    const served = serveCall(operation, request, {
      send: (type, payload) => void this.#send(type, payload),
      source: this.source,
      drained: () => this.#drained(),
      done: () => this.#serving.delete(requestId),
    });
    this.#serving.set(requestId, served);
  }

  /** Yields to the event loop, then waits while more than `HIGH_WATER` bytes are queued. */
  async #drained(): Promise<void> {
    do {
      await new Promise((resolve) => setTimeout(resolve, this.#socket.bufferedAmount > HIGH_WATER ? 10 : 0));
    } while (!this.#closed && this.#socket.bufferedAmount > HIGH_WATER);
  }

  #onClose(socketCode: number, socketReason: string): SessionEnd {
    this.#closed = true;
    clearTimeout(this.#welcomeTimer);
    // A connection given up for want of a welcome ended abnormally, whatever the socket says.
    const [code, reason] = this.#gaveUp ? [1006, this.#gaveUp] : [socketCode, socketReason];
    const error = new ConnectionClosedError(describeClose(code, reason), { code, reason });
    const calls = [...this.#calls.values()];
    this.#calls.clear();
    for (const sink of calls) sink.failed(error);
    const serving = [...this.#serving.values()];
    this.#serving.clear();
    for (const served of serving) served.abort(error);
    const end: SessionEnd = { code, reason };
    const refusal =
      this.#refusal ?? (code === 4401 ? new UnauthenticatedError(reason || "unauthenticated") : undefined);
    if (refusal) end.error = refusal;
    if (this.#welcome) end.welcome = this.#welcome;
    return end;
  }
}

function abortedByHub(): HubError {
  return new AbortedError(
    "ABORTED",
    "the hub aborted the call: its caller aborted or left, a timeout passed, or its parent call ended early",
  );
}

function describeClose(code: number, reason: string): string {
  return `the connection to the hub closed (code ${code}${reason ? `: ${reason}` : ""})`;
}

function closedError(code: number, reason: string): HubError {
  return new ConnectionClosedError(describeClose(code, reason), { code, reason });
}
