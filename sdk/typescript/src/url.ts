/**
 * The hub's addresses: its WebSocket endpoints (§1) and HTTP routes (§5)
 * from the base URL a user gives.
 *
 * @module
 */

/** Which WebSocket endpoint: spokes or clients. */
export type Endpoint = "spokes" | "clients";

/**
 * The WebSocket URL of `endpoint`. An `http(s)://` base URL (such as
 * `http://127.0.0.1:7700`) gets `/v1/spokes/connect` or `/v1/clients/connect`
 * appended to its path, with `ws(s)://`; a `ws(s)://` URL is used as given.
 */
export function webSocketUrl(url: string, endpoint: Endpoint): string {
  const parsed = new URL(url);
  if (parsed.protocol === "ws:" || parsed.protocol === "wss:") return parsed.href;
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    throw new TypeError(`the hub URL must be http(s) or ws(s), not ${parsed.protocol} (${url})`);
  }
  parsed.protocol = parsed.protocol === "https:" ? "wss:" : "ws:";
  return routeUrl(parsed.href, `v1/${endpoint}/connect`);
}

/** `path` (relative, without a leading slash) under the base URL's path. */
export function routeUrl(base: string, path: string): string {
  const parsed = new URL(base);
  if (!parsed.pathname.endsWith("/")) parsed.pathname += "/";
  parsed.search = "";
  parsed.hash = "";
  return new URL(path, parsed).href;
}

/** The HTTP route of an operation: `.../v1/operations/{operationId}/{action}`. */
export function operationUrl(base: string, operationId: string, action: "call" | "subscribe"): string {
  return routeUrl(base, `v1/operations/${encodeURIComponent(operationId)}/${action}`);
}
