/**
 * Errors by protocol code (docs/protocol.md §4.9): a base {@link HubError}
 * carrying `code`, `message` and `details`, one subclass per code of the
 * protocol's table, and {@link hubError} to build the right one from a
 * `call.error`, an `error` event or an HTTP error body.
 *
 * @module
 */

/**
 * A failure reported by the hub or by a provider. Domain codes that a
 * provider sends (`DISK_FULL`, say) arrive as a plain `HubError` with that
 * code; the protocol's own codes arrive as the subclasses below, which all
 * extend this class.
 *
 * A handler throws one to answer a call with its own code:
 * `throw new HubError("DISK_FULL", "no space left", { freeBytes: 0 })`.
 */
export class HubError extends Error {
  /** The protocol or domain code, such as `TIMEOUT` or `DISK_FULL`. */
  readonly code: string;
  /** Structured details, when the hub or the provider sent any. */
  readonly details: unknown;

  constructor(code: string, message: string, details?: unknown, options?: ErrorOptions) {
    super(message, options);
    this.name = "HubError";
    this.code = code;
    this.details = details;
  }
}

/** `OPERATION_NOT_FOUND`: no definition with that id is visible to the caller. */
export class OperationNotFoundError extends HubError {
  /** The code every instance carries. */
  static readonly code = "OPERATION_NOT_FOUND";
  constructor(message: string, details?: unknown, options?: ErrorOptions) {
    super("OPERATION_NOT_FOUND", message, details, options);
    this.name = "OperationNotFoundError";
  }
}

/** `NO_PROVIDER`: the definition exists but no provider serves it now. */
export class NoProviderError extends HubError {
  /** The code every instance carries. */
  static readonly code = "NO_PROVIDER";
  constructor(message: string, details?: unknown, options?: ErrorOptions) {
    super("NO_PROVIDER", message, details, options);
    this.name = "NoProviderError";
  }
}

/** `UNAUTHENTICATED`: a bad or missing token. */
export class UnauthenticatedError extends HubError {
  /** The code every instance carries. */
  static readonly code = "UNAUTHENTICATED";
  constructor(message: string, details?: unknown, options?: ErrorOptions) {
    super("UNAUTHENTICATED", message, details, options);
    this.name = "UnauthenticatedError";
  }
}

/** `ACCESS_DENIED`: the caller lacks a scope the operation requires. */
export class AccessDeniedError extends HubError {
  /** The code every instance carries. */
  static readonly code = "ACCESS_DENIED";
  constructor(message: string, details?: unknown, options?: ErrorOptions) {
    super("ACCESS_DENIED", message, details, options);
    this.name = "AccessDeniedError";
  }
}

/**
 * `VALIDATION_ERROR`: the input does not match the operation's input schema;
 * `details.errors` lists `{instancePath, message}` entries.
 */
export class ValidationError extends HubError {
  /** The code every instance carries. */
  static readonly code = "VALIDATION_ERROR";
  constructor(message: string, details?: unknown, options?: ErrorOptions) {
    super("VALIDATION_ERROR", message, details, options);
    this.name = "ValidationError";
  }
}

/** `TIMEOUT`: the call's deadline or idle timeout passed. */
export class TimeoutError extends HubError {
  /** The code every instance carries. */
  static readonly code = "TIMEOUT";
  constructor(message: string, details?: unknown, options?: ErrorOptions) {
    super("TIMEOUT", message, details, options);
    this.name = "TimeoutError";
  }
}

/**
 * `ABORTED`: the call was aborted: by its caller, by its provider, because
 * its parent call ended early, or by a shutdown.
 */
export class AbortedError extends HubError {
  /** The code every instance carries. */
  static readonly code = "ABORTED";
  constructor(message: string, details?: unknown, options?: ErrorOptions) {
    super("ABORTED", message, details, options);
    this.name = "AbortedError";
  }
}

/** `PROVIDER_GONE`: the provider disconnected before it answered. */
export class ProviderGoneError extends HubError {
  /** The code every instance carries. */
  static readonly code = "PROVIDER_GONE";
  constructor(message: string, details?: unknown, options?: ErrorOptions) {
    super("PROVIDER_GONE", message, details, options);
    this.name = "ProviderGoneError";
  }
}

/** `OVERLOADED`: a configured limit was hit; `details.retryAfterMs` may say when to try again. */
export class OverloadedError extends HubError {
  /** The code every instance carries. */
  static readonly code = "OVERLOADED";
  constructor(message: string, details?: unknown, options?: ErrorOptions) {
    super("OVERLOADED", message, details, options);
    this.name = "OverloadedError";
  }
}

/** `ROUTING_ERROR`: the routing policy refused the call or failed. */
export class RoutingError extends HubError {
  /** The code every instance carries. */
  static readonly code = "ROUTING_ERROR";
  constructor(message: string, details?: unknown, options?: ErrorOptions) {
    super("ROUTING_ERROR", message, details, options);
    this.name = "RoutingError";
  }
}

/** `ALREADY_REGISTERED`: another live session of the same principal already provides that operation. */
export class AlreadyRegisteredError extends HubError {
  /** The code every instance carries. */
  static readonly code = "ALREADY_REGISTERED";
  constructor(message: string, details?: unknown, options?: ErrorOptions) {
    super("ALREADY_REGISTERED", message, details, options);
    this.name = "AlreadyRegisteredError";
  }
}

/** `EXECUTION_ERROR`: the provider failed without a more specific code. */
export class ExecutionError extends HubError {
  /** The code every instance carries. */
  static readonly code = "EXECUTION_ERROR";
  constructor(message: string, details?: unknown, options?: ErrorOptions) {
    super("EXECUTION_ERROR", message, details, options);
    this.name = "ExecutionError";
  }
}

/** `PROTOCOL_ERROR`: a malformed or out-of-order frame or request body. */
export class ProtocolError extends HubError {
  /** The code every instance carries. */
  static readonly code = "PROTOCOL_ERROR";
  constructor(message: string, details?: unknown, options?: ErrorOptions) {
    super("PROTOCOL_ERROR", message, details, options);
    this.name = "ProtocolError";
  }
}

/** `UNKNOWN_ERROR`: anything else, such as a call started while the hub shuts down. */
export class UnknownError extends HubError {
  /** The code every instance carries. */
  static readonly code = "UNKNOWN_ERROR";
  constructor(message: string, details?: unknown, options?: ErrorOptions) {
    super("UNKNOWN_ERROR", message, details, options);
    this.name = "UnknownError";
  }
}

/**
 * `CONNECTION_CLOSED` is not a protocol code but this library's own: the
 * WebSocket to the hub closed (or could not open) before the call ended, the
 * peer was closed, or an HTTP stream ended without its last event.
 */
export class ConnectionClosedError extends HubError {
  /** The code every instance carries. */
  static readonly code = "CONNECTION_CLOSED";
  constructor(message: string, details?: unknown, options?: ErrorOptions) {
    super("CONNECTION_CLOSED", message, details, options);
    this.name = "ConnectionClosedError";
  }
}

type CodeErrorClass = {
  readonly code: string;
  new (message: string, details?: unknown): HubError;
};

const byCode: ReadonlyMap<string, CodeErrorClass> = new Map(
  (
    [
      OperationNotFoundError,
      NoProviderError,
      UnauthenticatedError,
      AccessDeniedError,
      ValidationError,
      TimeoutError,
      AbortedError,
      ProviderGoneError,
      OverloadedError,
      RoutingError,
      AlreadyRegisteredError,
      ExecutionError,
      ProtocolError,
      UnknownError,
      ConnectionClosedError,
    ] as CodeErrorClass[]
  ).map((Class) => [Class.code, Class]),
);

/**
 * The typed error for `code`: the subclass bound to a protocol code, else a
 * plain {@link HubError} that keeps the provider's own code.
 */
export function hubError(code: string, message: string, details?: unknown): HubError {
  const Class = byCode.get(code);
  return Class ? new Class(message, details) : new HubError(code, message, details);
}

/** The error of a call whose caller aborted it through `signal` (the signal's reason is its cause). */
export function abortedByCaller(signal: AbortSignal): AbortedError {
  return new AbortedError("the call was aborted by its caller", undefined, { cause: signal.reason });
}

/**
 * Reads an error as the hub sends it: a `call.error` or `error` event
 * payload, an HTTP error body, or the data of an SSE `error` event. A missing
 * code reads as `UNKNOWN_ERROR`; a `null` `details` counts as none.
 */
export function errorFromPayload(payload: unknown): HubError {
  const body = (payload ?? {}) as { code?: unknown; message?: unknown; details?: unknown };
  const code = typeof body.code === "string" ? body.code : "UNKNOWN_ERROR";
  const message = typeof body.message === "string" ? body.message : code;
  return hubError(code, message, body.details ?? undefined);
}
