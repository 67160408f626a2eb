/**
 * Calls over HTTP (§5.2, §5.3), with `fetch`: no WebSocket, no connection
 * to keep. Errors are the same typed classes as over WebSocket.
 *
 * @module
 */

import { ConnectionClosedError, HubError, abortedByCaller, errorFromPayload, hubError } from "./errors.js";
import { wholeMs } from "./calls.js";
import type { Envelope } from "./frames.js";
import { readEvents } from "./sse.js";
import { operationUrl } from "./url.js";

/** Options of an HTTP call or subscription. */
export interface HttpCallOptions {
  /** Aborting it ends the request; the hub then aborts the call at its provider. */
  signal?: AbortSignal;
  /** Time the call may take, ms (`timeoutMs`; the hub's default is 30000). */
  timeoutMs?: number;
  /** String values routing policies may read. */
  metadata?: Record<string, string>;
  /** A `fetch` to use instead of the global one. */
  fetch?: typeof fetch;
}

/**
 * Calls an operation with `POST /v1/operations/{id}/call`; resolves to the
 * `data` of its result. `token` may be omitted (`undefined` or `null`) for
 * `public` operations.
 */
export async function httpCall<T = any>(
  baseUrl: string,
  token: string | null | undefined,
  operationId: string,
  input?: unknown,
  options: HttpCallOptions = {},
): Promise<T> {
  const response = await post(baseUrl, token, operationId, "call", input, options);
  const envelope = (await readJson(response, options.signal)) as Envelope<T>;
  return envelope.data;
}

/**
 * Subscribes with `POST /v1/operations/{id}/subscribe` and yields the `data`
 * of each result of the event stream. The loop ends at the `completed`
 * event and throws the typed error of an `error` event; leaving it early
 * closes the stream, which aborts the call at its provider.
 */
export async function* httpSubscribe<T = any>(
  baseUrl: string,
  token: string | null | undefined,
  operationId: string,
  input?: unknown,
  options: HttpCallOptions = {},
): AsyncGenerator<T, void, undefined> {
  const controller = new AbortController();
  const stop = () => controller.abort(options.signal?.reason);
  options.signal?.addEventListener("abort", stop, { once: true });
  try {
    const response = await post(baseUrl, token, operationId, "subscribe", input, {
      ...options,
      signal: controller.signal,
    });
    if (!response.body) throw new ConnectionClosedError("the hub sent no event stream");
    try {
      for await (const { event, data } of readEvents(response.body)) {
        if (event === "responded") yield (JSON.parse(data) as Envelope<T>).data;
        else if (event === "completed") return;
        else if (event === "error") throw errorFromPayload(JSON.parse(data));
      }
    } catch (error) {
      throw options.signal?.aborted ? abortedByCaller(options.signal) : error;
    }
    throw new ConnectionClosedError("the event stream ended before its completed or error event");
  } finally {
    options.signal?.removeEventListener("abort", stop);
    controller.abort();
  }
}

async function post(
  baseUrl: string,
  token: string | null | undefined,
  operationId: string,
  action: "call" | "subscribe",
  input: unknown,
  options: HttpCallOptions,
): Promise<Response> {
  const body: { input?: unknown; timeoutMs?: number; metadata?: Record<string, string> } = {};
  if (input !== undefined) body.input = input;
  if (options.timeoutMs !== undefined) body.timeoutMs = wholeMs(options.timeoutMs);
  if (options.metadata !== undefined) body.metadata = options.metadata;
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const fetcher = options.fetch ?? fetch;
  let response: Response;
  try {
    response = await fetcher(operationUrl(baseUrl, operationId, action), {
      method: "POST",
      headers,
      body: JSON.stringify(body),
      ...(options.signal ? { signal: options.signal } : {}),
    });
  } catch (error) {
    if (options.signal?.aborted) throw abortedByCaller(options.signal);
    throw new ConnectionClosedError(`cannot reach the hub: ${(error as Error).message}`, undefined, {
      cause: error,
    });
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

async function readJson(response: Response, signal: AbortSignal | undefined): Promise<unknown> {
  try {
    return await response.json();
  } catch (error) {
    if (signal?.aborted) throw abortedByCaller(signal);
    throw new ConnectionClosedError(`the hub's answer could not be read: ${(error as Error).message}`);
  }
}

/** The typed error of a failed request: its JSON body, else its status. */
async function errorOf(response: Response): Promise<HubError> {
  const text = await response.text().catch(() => "");
  try {
    const body = JSON.parse(text) as { code?: unknown };
    if (typeof body?.code === "string") return errorFromPayload(body);
  } catch {
    // not JSON: described by its status below
  }
  return hubError("UNKNOWN_ERROR", `HTTP ${response.status}${text ? `: ${text.slice(0, 200)}` : ""}`);
}
