/**
 * Throttles a value-carrying call: at most one delivery per `intervalMs`, the last
 * value always wins, and the final value is always delivered on the trailing edge.
 *
 * With `leading: true` (the default) a call on an idle throttle is delivered at
 * once; calls within the following interval are coalesced into one trailing
 * delivery of the latest value. With `leading: false` every delivery happens on
 * the trailing edge, `intervalMs` after the first call of a burst.
 */
export class Throttle<T> {
  private timer: ReturnType<typeof setTimeout> | null = null;
  private pending: { value: T } | null = null;
  private lastRun = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly deliver: (value: T) => void,
    private readonly intervalMs: number,
    private readonly leading = true,
    private readonly now: () => number = Date.now,
  ) {}

  /** Schedules `value`; replaces any value still waiting. */
  call(value: T): void {
    if (this.intervalMs <= 0) {
      this.deliver(value);
      return;
    }
    this.pending = { value };
    if (this.timer !== null) return;
    const since = this.now() - this.lastRun;
    if (this.leading && since >= this.intervalMs) {
      this.run();
      return;
    }
    const wait = this.leading ? this.intervalMs - since : this.intervalMs;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.run();
    }, Math.max(0, wait));
  }

  /** Delivers a waiting value now. */
  flush(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.run();
  }

  /** Drops a waiting value. */
  cancel(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.pending = null;
  }

  get isPending(): boolean {
    return this.pending !== null;
  }

  private run(): void {
    const p = this.pending;
    if (!p) return;
    this.pending = null;
    this.lastRun = this.now();
    this.deliver(p.value);
  }
}
