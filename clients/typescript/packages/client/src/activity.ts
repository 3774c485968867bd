/**
 * User-activity detection for the `active` flag of heartbeats.
 *
 * A heartbeat is `active` when the user did something (pointer, keyboard, wheel,
 * touch, scroll, focusing the window, showing the tab) since the previous
 * heartbeat and the page is visible. With no `document` (Node, workers) the user
 * is always active unless the application says otherwise.
 */

/** The part of `EventTarget` the tracker needs (a `document`, a `window`, or a fake). */
export interface ActivityEventTarget {
  addEventListener(type: string, listener: () => void, options?: AddEventListenerOptionsLike): void;
  removeEventListener(type: string, listener: () => void, options?: AddEventListenerOptionsLike): void;
}

export interface AddEventListenerOptionsLike {
  capture?: boolean;
  passive?: boolean;
}

/** A `document`-like target: events plus `visibilityState` / `hidden`. */
export interface ActivityDocument extends ActivityEventTarget {
  visibilityState?: string;
  hidden?: boolean;
}

export interface ActivityTrackerOptions {
  /** Defaults to `globalThis.document` when it exists. */
  document?: ActivityDocument | null;
  /** Defaults to `globalThis.window` when it exists (for `focus`). */
  window?: ActivityEventTarget | null;
  /** Document events that count as activity. */
  events?: readonly string[];
}

export const ACTIVITY_EVENTS = [
  "pointerdown",
  "pointermove",
  "keydown",
  "wheel",
  "touchstart",
  "scroll",
] as const;

const LISTEN_OPTS: AddEventListenerOptionsLike = { capture: true, passive: true };

export class ActivityTracker {
  private readonly doc: ActivityDocument | null;
  private readonly win: ActivityEventTarget | null;
  private readonly events: readonly string[];
  /** Activity seen since the last {@link take}. Starts true: connecting is a sign of presence. */
  private dirty = true;
  private lastReported: boolean | null = null;
  private forced: boolean | null = null;
  private started = false;
  private wakeListeners = new Set<() => void>();

  constructor(opts: ActivityTrackerOptions = {}) {
    const g = globalThis as { document?: ActivityDocument; window?: ActivityEventTarget };
    this.doc = opts.document !== undefined ? opts.document : (g.document ?? null);
    this.win = opts.window !== undefined ? opts.window : (g.window ?? null);
    this.events = opts.events ?? ACTIVITY_EVENTS;
  }

  /** Whether real activity detection is possible (a document exists). */
  get detecting(): boolean {
    return this.doc !== null;
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    if (this.doc) {
      for (const e of this.events) this.doc.addEventListener(e, this.onActivity, LISTEN_OPTS);
      this.doc.addEventListener("visibilitychange", this.onVisibility);
    }
    this.win?.addEventListener("focus", this.onActivity);
  }

  stop(): void {
    if (!this.started) return;
    this.started = false;
    if (this.doc) {
      for (const e of this.events) this.doc.removeEventListener(e, this.onActivity, LISTEN_OPTS);
      this.doc.removeEventListener("visibilitychange", this.onVisibility);
    }
    this.win?.removeEventListener("focus", this.onActivity);
  }

  /** Forces the flag (`true`/`false`) or returns to detection (`null`). */
  setForced(active: boolean | null): void {
    const wasReported = this.lastReported;
    this.forced = active;
    if (active === true && wasReported === false) this.wake();
  }

  get forcedValue(): boolean | null {
    return this.forced;
  }

  /** The page is visible (always true without a document). */
  get visible(): boolean {
    if (!this.doc) return true;
    if (this.doc.visibilityState !== undefined) return this.doc.visibilityState !== "hidden";
    return this.doc.hidden !== true;
  }

  /** What the next heartbeat would report, without consuming it. */
  peek(): boolean {
    if (this.forced !== null) return this.forced;
    if (!this.doc) return true;
    return this.dirty && this.visible;
  }

  /** The `active` flag for a heartbeat being sent now; starts a new period. */
  take(): boolean {
    const active = this.peek();
    this.dirty = false;
    this.lastReported = active;
    return active;
  }

  /**
   * Called when activity resumes after a heartbeat reported `active:false`, so the
   * client can send a heartbeat at once instead of waiting for the next tick.
   */
  onWake(listener: () => void): () => void {
    this.wakeListeners.add(listener);
    return () => this.wakeListeners.delete(listener);
  }

  private readonly onActivity = (): void => {
    const first = !this.dirty;
    this.dirty = true;
    if (first && this.lastReported === false && this.forced === null && this.visible) this.wake();
  };

  private readonly onVisibility = (): void => {
    if (this.visible) this.onActivity();
  };

  private wake(): void {
    for (const l of [...this.wakeListeners]) l();
  }
}
