/**
 * Reconnect delays: exponential backoff with jitter.
 *
 * @module
 */

/** How a peer reconnects after losing its connection. */
export interface ReconnectOptions {
  /** Delay before the first retry, ms (default 250). */
  initialDelayMs?: number;
  /** Longest delay between two attempts, ms (default 30000). */
  maxDelayMs?: number;
  /** Growth of the delay per failed attempt (default 2). */
  factor?: number;
  /**
   * Share of each delay drawn at random, 0 to 1 (default 0.5): a delay `d`
   * becomes a uniform pick in `[d * (1 - jitter), d]`, so peers dropped
   * together do not come back together.
   */
  jitter?: number;
  /** Attempts in a row without a `welcome` before giving up (default: never give up). */
  maxAttempts?: number;
}

/** {@link ReconnectOptions} with every default filled in. */
export type ReconnectPolicy = Required<ReconnectOptions>;

/** The policy of `options`, defaults filled in. */
export function reconnectPolicy(options: ReconnectOptions = {}): ReconnectPolicy {
  const policy = {
    initialDelayMs: options.initialDelayMs ?? 250,
    maxDelayMs: options.maxDelayMs ?? 30_000,
    factor: options.factor ?? 2,
    jitter: options.jitter ?? 0.5,
    maxAttempts: options.maxAttempts ?? Number.POSITIVE_INFINITY,
  };
  if (!(policy.jitter >= 0 && policy.jitter <= 1)) {
    throw new RangeError(`reconnect.jitter must be between 0 and 1, not ${policy.jitter}`);
  }
  return policy;
}

/** The delay before retry number `attempt` (0 for the first), ms. */
export function backoffDelay(
  policy: ReconnectPolicy,
  attempt: number,
  random: () => number = Math.random,
): number {
  const base = Math.min(policy.maxDelayMs, policy.initialDelayMs * policy.factor ** attempt);
  return Math.round(base * (1 - policy.jitter * random()));
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}
