/**
 * Operations a peer serves: how they are declared (JSON Schema or zod),
 * the context their handlers receive, and their `OperationSpec` for `hello`.
 *
 * @module
 */

import type { Subscription } from "./calls.js";
import type { CallOptions } from "./calls.js";
import { ValidationError } from "./errors.js";
import type { AccessLevel, Identity, JsonSchema, OperationSpec, OperationType } from "./frames.js";

/**
 * A zod v4 schema, seen structurally so that zod stays an optional
 * dependency: it is converted with zod's `toJSONSchema` for the hub, and
 * the handler's input is parsed with it (defaults, transforms, refinements).
 */
export interface ZodSchemaLike<Output = unknown> {
  readonly _zod: { readonly output: Output; readonly input: unknown };
  readonly "~standard": {
    validate(value: unknown): StandardResult<Output> | Promise<StandardResult<Output>>;
  };
}

/** The result of a Standard Schema validation. */
type StandardResult<T> =
  | { readonly value: T; readonly issues?: undefined }
  | {
      readonly issues: ReadonlyArray<{
        readonly message: string;
        readonly path?: ReadonlyArray<PropertyKey | { readonly key: PropertyKey }>;
      }>;
    };

/** A schema an operation may declare: JSON Schema, or a zod schema. */
export type SchemaLike = JsonSchema | ZodSchemaLike;

/** The value type of a schema: the zod output type, else `any`. */
export type Infer<S> = S extends ZodSchemaLike<infer T> ? T : any;

/** How a peer declares an operation it serves. */
export interface OperationDefinition<I extends SchemaLike = SchemaLike, O extends SchemaLike = SchemaLike> {
  /** `namespace.name`, such as `demo.echo`; or give `namespace` and `name`. */
  id?: string;
  /** Dot-separated segments, each `[A-Za-z][A-Za-z0-9_-]*`. */
  namespace?: string;
  /** One segment. */
  name?: string;
  type: OperationType;
  description?: string;
  /** The input's schema; the hub checks every call's input against it. */
  input?: I;
  /** The schema of the results (informational; the hub does not check outputs). */
  output?: O;
  /** Who may call it (default `authenticated`). */
  access?: AccessLevel;
  /** With `access: "scoped"`: scopes a caller must hold, every one. */
  requiredScopes?: string[];
}

/** Options of a call made while serving one; its parent is set for it. */
export type ChildCallOptions = Omit<CallOptions, "parentRequestId">;

/** What a handler receives besides its input. */
export interface CallContext {
  /** The hub's id of this call (`h42`); children name it as their parent. */
  readonly requestId: string;
  /** The operation id as this peer declared it. */
  readonly operationId: string;
  /** The hub id of the call this one serves, when the caller named one. */
  readonly parentRequestId: string | undefined;
  /** Who calls. */
  readonly identity: Identity | undefined;
  /** The caller's routing metadata. */
  readonly metadata: Readonly<Record<string, string>>;
  /** The call's absolute deadline, ms since the Unix epoch, if it has one. */
  readonly deadline: number | undefined;
  /**
   * Fires when the call ends before the handler does: the caller aborted,
   * a deadline or idle timeout passed, the parent call ended early, or the
   * connection to the hub was lost.
   */
  readonly signal: AbortSignal;
  /** Calls another operation as a child of this call (`parentRequestId` set). */
  call<T = any>(operationId: string, input?: unknown, options?: ChildCallOptions): Promise<T>;
  /** Subscribes to another operation as a child of this call. */
  subscribe<T = any>(operationId: string, input?: unknown, options?: ChildCallOptions): Subscription<T>;
}

/** Serves a query or a mutation: returns (or resolves to) the result's data. */
export type QueryHandler<I = unknown, O = unknown> = (input: I, ctx: CallContext) => O | Promise<O>;

/**
 * Serves a subscription: returns an async iterable (an async generator, say)
 * whose values are the events. It is stopped with `return()` when the call
 * ends early, and `ctx.signal` fires.
 */
export type SubscriptionHandler<I = unknown, O = unknown> = (
  input: I,
  ctx: CallContext,
) => AsyncIterable<O> | Iterable<O> | Promise<AsyncIterable<O> | Iterable<O>>;

/** A declared operation, ready to serve. */
export interface DeclaredOperation {
  /** `namespace.name` as declared. */
  readonly id: string;
  readonly type: OperationType;
  readonly handler: QueryHandler | SubscriptionHandler;
  /** The input as the handler gets it: parsed by the zod schema, if one was given. */
  parseInput(input: unknown): Promise<unknown>;
  /** The declaration for `hello` (zod schemas converted). */
  spec(): Promise<OperationSpec>;
}

/** Checks a definition and binds it to its handler. */
export function declareOperation(
  definition: OperationDefinition,
  handler: QueryHandler | SubscriptionHandler,
): DeclaredOperation {
  const { namespace, name } = splitId(definition);
  const id = `${namespace}.${name}`;
  if (!["query", "mutation", "subscription"].includes(definition.type)) {
    throw new TypeError(`operation ${id}: type must be query, mutation or subscription`);
  }
  if (typeof handler !== "function") throw new TypeError(`operation ${id}: the handler must be a function`);
  const input = definition.input;
  let spec: Promise<OperationSpec> | undefined;
  return {
    id,
    type: definition.type,
    handler,
    parseInput: (value) => (isZod(input) ? parseWithZod(input, value) : Promise.resolve(value)),
    spec: () => (spec ??= buildSpec(definition, namespace, name)),
  };
}

function splitId(definition: OperationDefinition): { namespace: string; name: string } {
  if (definition.id !== undefined) {
    const dot = definition.id.lastIndexOf(".");
    if (dot <= 0 || dot === definition.id.length - 1) {
      throw new TypeError(`operation id ${JSON.stringify(definition.id)} must be namespace.name`);
    }
    return { namespace: definition.id.slice(0, dot), name: definition.id.slice(dot + 1) };
  }
  if (!definition.namespace || !definition.name) {
    throw new TypeError("an operation needs an id, or a namespace and a name");
  }
  return { namespace: definition.namespace, name: definition.name };
}

async function buildSpec(
  definition: OperationDefinition,
  namespace: string,
  name: string,
): Promise<OperationSpec> {
  const spec: OperationSpec = { namespace, name, type: definition.type };
  if (definition.description !== undefined) spec.description = definition.description;
  if (definition.input !== undefined) spec.inputSchema = await toJsonSchema(definition.input, "input");
  if (definition.output !== undefined) spec.outputSchema = await toJsonSchema(definition.output, "output");
  if (definition.access !== undefined) spec.accessLevel = definition.access;
  if (definition.requiredScopes !== undefined) spec.requiredScopes = definition.requiredScopes;
  return spec;
}

function isZod(schema: unknown): schema is ZodSchemaLike {
  return typeof schema === "object" && schema !== null && "_zod" in schema && "~standard" in schema;
}

type ZodModule = { toJSONSchema?: (schema: unknown, params: { io: "input" | "output" }) => JsonSchema };

// A specifier in a variable: bundlers leave the import alone, so a browser
// build of a client never needs zod.
const zodModuleName = "zod";

async function toJsonSchema(schema: SchemaLike, io: "input" | "output"): Promise<JsonSchema> {
  if (!isZod(schema)) return schema;
  let zod: ZodModule;
  try {
    zod = (await import(/* webpackIgnore: true */ /* @vite-ignore */ zodModuleName)) as ZodModule;
  } catch (error) {
    throw new Error("an operation declares a zod schema, but the zod package cannot be loaded", {
      cause: error,
    });
  }
  if (typeof zod.toJSONSchema !== "function") {
    throw new Error("zod schemas need zod 4 or later (z.toJSONSchema)");
  }
  return zod.toJSONSchema(schema, { io });
}

async function parseWithZod(schema: ZodSchemaLike, value: unknown): Promise<unknown> {
  const result = await schema["~standard"].validate(value);
  if (!result.issues) return result.value;
  const errors = result.issues.map((issue) => ({
    instancePath: (issue.path ?? [])
      .map((part) => "/" + String(typeof part === "object" ? part.key : part))
      .join(""),
    message: issue.message,
  }));
  throw new ValidationError("input does not match the operation's zod schema", { errors });
}
