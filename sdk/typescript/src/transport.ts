/**
 * Opens a WebSocket with whatever implementation the platform has: the
 * global `WebSocket` (browsers, Deno, Node 22+), else the `ws` package,
 * loaded on first use so that browser bundles never need it. Both answer the
 * hub's pings on their own.
 *
 * @module
 */

/** The subset of the WHATWG `WebSocket` this library uses. */
export interface WebSocketLike {
  readonly readyState: number;
  readonly bufferedAmount: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

/** A `WebSocket` constructor, such as the global one or `ws`'s. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** What a {@link Socket} reports. */
export interface SocketListener {
  /** The connection is open. */
  open(): void;
  /** A text message arrived (binary messages are ignored). */
  text(text: string): void;
  /** The connection ended, or could not be opened (code 1006). Called once. */
  close(code: number, reason: string): void;
}

/** One WebSocket connection. */
export interface Socket {
  /** Sends a text message; false when the connection is not open. */
  send(text: string): boolean;
  /** Starts the closing handshake; its end is reported within 2 s at the latest. */
  close(code?: number, reason?: string): void;
  /** Bytes sent but not yet written to the network. */
  readonly bufferedAmount: number;
}

const OPEN = 1;

let fallback: Promise<WebSocketConstructor> | undefined;

/** The platform's WebSocket: the global one when present, else `ws`. */
export function defaultWebSocket(): Promise<WebSocketConstructor> {
  const native = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (native) return Promise.resolve(native);
  fallback ??= import("ws").then((module) => module.WebSocket as unknown as WebSocketConstructor);
  return fallback;
}

/**
 * How long a connection may take to report its end after it was closed, or
 * after an error, before it is given up as closed (code 1006): some
 * implementations fire no close event when a handshake fails.
 */
const CLOSE_GRACE_MS = 2000;

/** Opens `url` and reports to `listener`; `close` is reported exactly once, and nothing after it. */
export function openSocket(Impl: WebSocketConstructor, url: string, listener: SocketListener): Socket {
  let closed = false;
  let grace: ReturnType<typeof setTimeout> | undefined;
  const finish = (code: number, reason: string) => {
    if (closed) return;
    closed = true;
    clearTimeout(grace);
    listener.close(code, reason);
  };
  const giveUpLater = (reason: string) => {
    grace ??= setTimeout(() => finish(1006, reason), CLOSE_GRACE_MS);
  };
  let ws: WebSocketLike;
  try {
    ws = new Impl(url);
  } catch (error) {
    queueMicrotask(() => finish(1006, error instanceof Error ? error.message : String(error)));
    return { send: () => false, close: () => undefined, bufferedAmount: 0 };
  }
  ws.onopen = () => {
    if (!closed) listener.open();
  };
  ws.onmessage = (event) => {
    if (!closed && typeof event.data === "string") listener.text(event.data);
  };
  ws.onerror = () => giveUpLater("the connection failed");
  ws.onclose = (event) => finish(event.code, event.reason);
  return {
    send(text) {
      if (closed || ws.readyState !== OPEN) return false;
      ws.send(text);
      return true;
    },
    close(code = 1000, reason = "") {
      if (closed) return;
      giveUpLater(reason || "closed");
      try {
        ws.close(code, reason);
      } catch {
        finish(1006, reason || "closed");
      }
    },
    get bufferedAmount() {
      return ws.bufferedAmount;
    },
  };
}
