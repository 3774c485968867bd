import { describe, expect, it } from "vitest";
import { ActivityTracker, ACTIVITY_EVENTS } from "../../src/activity.js";

/** A fake document/window: records listeners, dispatches events, has visibilityState. */
class FakeTarget {
  listeners = new Map<string, Set<() => void>>();
  visibilityState: "visible" | "hidden" = "visible";
  addEventListener(type: string, l: () => void): void {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type)!.add(l);
  }
  removeEventListener(type: string, l: () => void): void {
    this.listeners.get(type)?.delete(l);
  }
  dispatch(type: string): void {
    for (const l of this.listeners.get(type) ?? []) l();
  }
  count(): number {
    let n = 0;
    for (const s of this.listeners.values()) n += s.size;
    return n;
  }
}

function tracker() {
  const doc = new FakeTarget();
  const win = new FakeTarget();
  const t = new ActivityTracker({ document: doc, window: win });
  t.start();
  return { doc, win, t };
}

describe("ActivityTracker", () => {
  it("listens for pointer, keyboard, wheel, touch, scroll, visibility and focus; stop removes them", () => {
    const { doc, win, t } = tracker();
    for (const e of [...ACTIVITY_EVENTS, "visibilitychange"]) expect(doc.listeners.get(e)?.size).toBe(1);
    expect(win.listeners.get("focus")?.size).toBe(1);
    t.stop();
    expect(doc.count() + win.count()).toBe(0);
  });

  it("the first heartbeat is active; then only when the user did something since the last one", () => {
    const { doc, t } = tracker();
    expect(t.take()).toBe(true);
    expect(t.take()).toBe(false);
    doc.dispatch("pointermove");
    expect(t.peek()).toBe(true);
    expect(t.take()).toBe(true);
    expect(t.take()).toBe(false);
    doc.dispatch("keydown");
    expect(t.take()).toBe(true);
  });

  it.each(["pointerdown", "pointermove", "keydown", "wheel", "touchstart", "scroll"])("%s counts as activity", (e) => {
    const { doc, t } = tracker();
    t.take();
    expect(t.take()).toBe(false);
    doc.dispatch(e);
    expect(t.take()).toBe(true);
  });

  it("a hidden page is never active, even with events", () => {
    const { doc, t } = tracker();
    doc.visibilityState = "hidden";
    doc.dispatch("visibilitychange");
    doc.dispatch("keydown");
    expect(t.take()).toBe(false);
  });

  it("showing the tab or focusing the window counts as activity", () => {
    const { doc, win, t } = tracker();
    doc.visibilityState = "hidden";
    t.take();
    doc.visibilityState = "visible";
    doc.dispatch("visibilitychange");
    expect(t.take()).toBe(true);
    expect(t.take()).toBe(false);
    win.dispatch("focus");
    expect(t.take()).toBe(true);
  });

  it("wakes the client once when activity resumes after an inactive heartbeat", () => {
    const { doc, t } = tracker();
    let wakes = 0;
    t.onWake(() => wakes++);
    t.take(); // active
    doc.dispatch("pointermove"); // was active: no wake needed
    expect(wakes).toBe(0);
    t.take(); // active (the move above)
    t.take(); // inactive
    doc.dispatch("pointermove");
    doc.dispatch("pointermove");
    expect(wakes).toBe(1);
  });

  it("without a document (Node) it is always active", () => {
    const t = new ActivityTracker({ document: null, window: null });
    t.start();
    expect(t.detecting).toBe(false);
    expect([t.take(), t.take(), t.take()]).toEqual([true, true, true]);
  });

  it("a forced value wins until it is reset to null", () => {
    const { doc, t } = tracker();
    t.setForced(false);
    doc.dispatch("keydown");
    expect(t.take()).toBe(false);
    let wakes = 0;
    t.onWake(() => wakes++);
    t.setForced(true);
    expect(wakes).toBe(1);
    expect(t.take()).toBe(true);
    t.setForced(null);
    expect(t.take()).toBe(false);
    const node = new ActivityTracker({ document: null, window: null });
    node.setForced(false);
    expect(node.take()).toBe(false);
  });
});
