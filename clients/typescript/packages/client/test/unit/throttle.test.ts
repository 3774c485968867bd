import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Throttle } from "../../src/throttle.js";

describe("Throttle", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("leading: the first call goes at once, a burst collapses to its last value on the trailing edge", () => {
    const out: Array<[number, number]> = [];
    const t0 = Date.now();
    const th = new Throttle<number>((v) => out.push([Date.now() - t0, v]), 100);
    th.call(1);
    expect(out).toEqual([[0, 1]]);
    for (let i = 2; i <= 10; i++) {
      vi.advanceTimersByTime(5);
      th.call(i);
    }
    expect(out).toHaveLength(1);
    vi.advanceTimersByTime(100);
    expect(out).toEqual([
      [0, 1],
      [100, 10],
    ]);
    // Idle again after a full interval: the next call is immediate.
    vi.advanceTimersByTime(150);
    th.call(11);
    expect(out.at(-1)).toEqual([295, 11]);
  });

  it("never delivers more than once per interval under a steady stream", () => {
    const times: number[] = [];
    const t0 = Date.now();
    const th = new Throttle<number>(() => times.push(Date.now() - t0), 100);
    for (let i = 0; i < 100; i++) {
      th.call(i);
      vi.advanceTimersByTime(7);
    }
    vi.advanceTimersByTime(200);
    for (let i = 1; i < times.length; i++) expect(times[i]! - times[i - 1]!).toBeGreaterThanOrEqual(100);
    // ~700 ms of calls: about 8 deliveries, not 100.
    expect(times.length).toBeGreaterThanOrEqual(7);
    expect(times.length).toBeLessThanOrEqual(9);
  });

  it("the last value always wins", () => {
    const out: string[] = [];
    const th = new Throttle<string>((v) => out.push(v), 50);
    th.call("a");
    th.call("b");
    th.call("c");
    vi.advanceTimersByTime(50);
    expect(out).toEqual(["a", "c"]);
  });

  it("trailing only (leading: false): one delivery intervalMs after the first call", () => {
    const out: Array<[number, string]> = [];
    const t0 = Date.now();
    const th = new Throttle<string>((v) => out.push([Date.now() - t0, v]), 100, false);
    th.call("x");
    vi.advanceTimersByTime(30);
    th.call("y");
    expect(out).toEqual([]);
    vi.advanceTimersByTime(70);
    expect(out).toEqual([[100, "y"]]);
  });

  it("flush sends the waiting value now; cancel drops it", () => {
    const out: number[] = [];
    const th = new Throttle<number>((v) => out.push(v), 100);
    th.call(1);
    th.call(2);
    expect(th.isPending).toBe(true);
    th.flush();
    expect(out).toEqual([1, 2]);
    vi.advanceTimersByTime(10);
    th.call(3);
    th.cancel();
    vi.advanceTimersByTime(500);
    expect(out).toEqual([1, 2]);
  });

  it("interval 0 delivers every call synchronously", () => {
    const out: number[] = [];
    const th = new Throttle<number>((v) => out.push(v), 0);
    th.call(1);
    th.call(2);
    expect(out).toEqual([1, 2]);
  });
});
