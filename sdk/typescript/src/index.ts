/**
 * `@alkhub/sdk`: spokes and clients of an alkhub hub.
 *
 * - {@link Spoke} serves operations over WebSocket; {@link Client} calls
 *   them. Both reconnect with backoff.
 * - {@link httpCall} and {@link httpSubscribe} call over HTTP.
 * - Failures are {@link HubError}s, one subclass per protocol code.
 *
 * @module
 */

export { Spoke } from "./spoke.js";
export { Client } from "./client.js";
export {
  Peer,
  FINAL_CLOSE_CODES,
  type PeerOptions,
  type PeerState,
  type PeerEvents,
  type CloseInfo,
  type ReconnectInfo,
} from "./peer.js";
export { Subscription, type CallOptions } from "./calls.js";
export type {
  CallContext,
  ChildCallOptions,
  Infer,
  OperationDefinition,
  QueryHandler,
  SchemaLike,
  SubscriptionHandler,
  ZodSchemaLike,
} from "./operations.js";
export type { ReconnectOptions } from "./backoff.js";
export { httpCall, httpSubscribe, type HttpCallOptions } from "./http.js";
export type {
  AccessLevel,
  Envelope,
  Identity,
  JsonSchema,
  OperationSpec,
  OperationType,
  Registration,
  RegistrationWarning,
  Rejection,
  Welcome,
} from "./frames.js";
export type { WebSocketConstructor, WebSocketLike } from "./transport.js";
export {
  HubError,
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
  hubError,
} from "./errors.js";
