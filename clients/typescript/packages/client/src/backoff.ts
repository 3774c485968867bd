/** Reconnect policy: exponential back-off with full jitter. */
export interface ReconnectOptions {
  /**
   * Consecutive failed attempts after which the client gives up and closes
   * (`closed` with a `max_attempts` error). Default `Infinity`. `0` disables
   * reconnecting altogether.
   */
  maxAttempts?: number;
  /** Base delay in ms: attempt n (0-based) waits up to `baseMs · 2^n`. Default 500. */
  baseMs?: number;
  /** Cap on the delay in ms. Default 30 000. */
  maxMs?: number;
}

export const DEFAULT_RECONNECT: Required<ReconnectOptions> = {
  maxAttempts: Number.POSITIVE_INFINITY,
  baseMs: 500,
  maxMs: 30_000,
};

/**
 * Upper bound of the delay before attempt `attempt` (0-based): `min(maxMs, baseMs · 2^attempt)`.
 */
export function backoffCeiling(attempt: number, opts: Pick<ReconnectOptions, "baseMs" | "maxMs"> = {}): number {
  const base = opts.baseMs ?? DEFAULT_RECONNECT.baseMs;
  const max = opts.maxMs ?? DEFAULT_RECONNECT.maxMs;
  // 2^attempt overflows to Infinity for large attempts; min() keeps it bounded.
  return Math.min(max, base * Math.pow(2, Math.max(0, attempt)));
}

/**
 * "Full jitter" (AWS architecture blog): a uniformly random delay between 0 and
 * the ceiling, so that many clients dropped at once do not reconnect in lockstep.
 */
export function fullJitterDelay(
  attempt: number,
  opts: Pick<ReconnectOptions, "baseMs" | "maxMs"> = {},
  random: () => number = Math.random,
): number {
  return Math.floor(random() * backoffCeiling(attempt, opts));
}

/** Counts consecutive failed attempts and hands out delays. */
export class Backoff {
  private attempt = 0;
  private readonly opts: Required<ReconnectOptions>;

  constructor(
    opts: ReconnectOptions = {},
    private readonly random: () => number = Math.random,
  ) {
    this.opts = { ...DEFAULT_RECONNECT, ...stripUndefined(opts) };
  }

  /** Attempts used since the last {@link reset}. */
  get attempts(): number {
    return this.attempt;
  }

  get maxAttempts(): number {
    return this.opts.maxAttempts;
  }

  /** Whether another attempt is allowed. */
  get canRetry(): boolean {
    return this.attempt < this.opts.maxAttempts;
  }

  /** Delay for the next attempt, and counts it. Returns `null` when the budget is spent. */
  next(): number | null {
    if (!this.canRetry) return null;
    const d = fullJitterDelay(this.attempt, this.opts, this.random);
    this.attempt++;
    return d;
  }

  /** After a successful connection. */
  reset(): void {
    this.attempt = 0;
  }
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}
