import { describe, expect, it } from "vitest";
import { Backoff, backoffCeiling, fullJitterDelay } from "../../src/backoff.js";

describe("back-off with full jitter", () => {
  it("the ceiling doubles from baseMs and is capped at maxMs", () => {
    const o = { baseMs: 100, maxMs: 1500 };
    expect([0, 1, 2, 3, 4, 5, 60, 5000].map((n) => backoffCeiling(n, o))).toEqual([
      100, 200, 400, 800, 1500, 1500, 1500, 1500,
    ]);
  });

  it("delays are uniform in [0, ceiling): both extremes of the random source", () => {
    const o = { baseMs: 100, maxMs: 1500 };
    for (let n = 0; n < 8; n++) {
      expect(fullJitterDelay(n, o, () => 0)).toBe(0);
      const max = fullJitterDelay(n, o, () => 0.999999);
      expect(max).toBeLessThan(backoffCeiling(n, o));
      expect(max).toBeGreaterThanOrEqual(backoffCeiling(n, o) - 1);
    }
  });

  it("random delays stay within the bounds and use the whole range", () => {
    const o = { baseMs: 50, maxMs: 400 };
    for (let n = 0; n < 10; n++) {
      const ceiling = backoffCeiling(n, o);
      const samples = Array.from({ length: 400 }, () => fullJitterDelay(n, o));
      for (const d of samples) {
        expect(d).toBeGreaterThanOrEqual(0);
        expect(d).toBeLessThan(ceiling);
      }
      // Full jitter, not "equal jitter": small delays occur at every attempt.
      expect(Math.min(...samples)).toBeLessThan(ceiling * 0.1);
      expect(Math.max(...samples)).toBeGreaterThan(ceiling * 0.9);
    }
  });

  it("counts attempts, stops at maxAttempts, and starts over after reset", () => {
    const b = new Backoff({ maxAttempts: 3, baseMs: 10, maxMs: 1000 }, () => 0.5);
    expect(b.next()).toBe(5);
    expect(b.next()).toBe(10);
    expect(b.next()).toBe(20);
    expect(b.attempts).toBe(3);
    expect(b.canRetry).toBe(false);
    expect(b.next()).toBeNull();
    b.reset();
    expect(b.next()).toBe(5);
  });

  it("defaults: unlimited attempts, 500 ms base, 30 s cap", () => {
    const b = new Backoff({}, () => 0.999999);
    let last = 0;
    for (let i = 0; i < 100; i++) last = b.next()!;
    expect(last).toBe(29_999);
    expect(b.canRetry).toBe(true);
    expect(backoffCeiling(0)).toBe(500);
  });

  it("maxAttempts 0 never retries", () => {
    expect(new Backoff({ maxAttempts: 0 }).next()).toBeNull();
  });
});
