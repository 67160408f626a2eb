/**
 * The wire format of docs/protocol.md: the frame envelope, the payloads this
 * library sends and reads, and their encoding. Nothing here does I/O.
 *
 * @module
 */

/** `query` (read-only, safe to retry), `mutation`, or `subscription` (a stream). */
export type OperationType = "query" | "mutation" | "subscription";

/** Who may call an operation (§3.5); `authenticated` when not declared. */
export type AccessLevel = "public" | "authenticated" | "scoped" | "internal";

/** A JSON Schema: an object, or `true`/`false`. */
export type JsonSchema = { readonly [key: string]: unknown } | boolean;

/** An operation as declared in `hello` (§3.1). */
export interface OperationSpec {
  namespace: string;
  name: string;
  type: OperationType;
  description?: string;
  inputSchema?: JsonSchema;
  outputSchema?: JsonSchema;
  accessLevel?: AccessLevel;
  requiredScopes?: string[];
}

/** An authenticated principal: the peer itself in `welcome`, a caller in `call.requested`. */
export interface Identity {
  kind: "spoke" | "client";
  /** The principal's id; `""` for an anonymous HTTP caller. */
  id: string;
  scopes: string[];
}

/** One declared operation the hub registered (§3.3). */
export interface Registration {
  /** The post-remap id callers use. */
  operationId: string;
  /** The id as declared. */
  preRemapId: string;
  registrationId: string;
}

/** One declared operation the hub refused, with the reason's code. */
export interface Rejection {
  /** The id as declared. */
  operationId: string;
  code: string;
  message: string;
}

/** A declaration registered otherwise than configured (a remap plugin failed and fell back). */
export interface RegistrationWarning {
  operationId: string;
  message: string;
}

/** The hub's answer to `hello` (§2.2). */
export interface Welcome {
  /** A decimal integer as a string; unique for the life of the hub process. */
  sessionId: string;
  principal: Identity;
  /** Interval of the hub's WebSocket pings. */
  heartbeatMs: number;
  registrations: Registration[];
  rejected: Rejection[];
  warnings?: RegistrationWarning[];
}

/** A response envelope: what a `call.responded` carries as `output` (§4.4). */
export interface Envelope<T = unknown> {
  data: T;
  meta?: { [key: string]: unknown };
}

/** `call.requested` as the hub delivers it to a provider (§4.3). */
export interface CallRequest {
  requestId: string;
  operationId: string;
  input?: unknown;
  parentRequestId?: string;
  deadline?: number;
  idleTimeout?: number;
  metadata?: Record<string, string>;
  identity?: Identity;
}

/** `call.requested` as a caller sends it (§4.1). */
export interface CallRequestOut {
  requestId: string;
  operationId: string;
  input?: unknown;
  parentRequestId?: string;
  deadline?: number;
  idleTimeout?: number;
  metadata?: Record<string, string>;
}

/** The error fields of `call.error` and of the `error` event. */
export interface ErrorPayload {
  code?: string;
  message?: string;
  details?: unknown;
}

/** A decoded frame: its type and its payload (`{}` when absent or `null`). */
export interface Frame {
  type: string;
  payload: Record<string, unknown>;
}

/** Encodes one frame as the text of a WebSocket message. */
export function encodeFrame(type: string, payload: object): string {
  return JSON.stringify({ type, payload });
}

/**
 * Decodes the text of a WebSocket message; `undefined` when it is not a
 * JSON object with a string `type`.
 */
export function decodeFrame(text: string): Frame | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null) return undefined;
  const { type, payload } = value as { type?: unknown; payload?: unknown };
  if (typeof type !== "string") return undefined;
  const body = typeof payload === "object" && payload !== null ? payload : {};
  return { type, payload: body as Record<string, unknown> };
}
