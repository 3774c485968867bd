import { randomId } from "./util.js";

/** The part of the Web Storage API used for the client id. */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

export const DEFAULT_CLIENT_ID_KEY = "roster:clientId";

/** `globalThis.sessionStorage`, or `null` where it is missing or blocked. */
export function defaultSessionStorage(): StorageLike | null {
  try {
    const s = (globalThis as { sessionStorage?: StorageLike }).sessionStorage;
    return s ?? null;
  } catch {
    // Accessing sessionStorage throws in some privacy modes and sandboxed frames.
    return null;
  }
}

/**
 * A client id that is stable for the life of a tab: read from `storage` (by
 * default `sessionStorage`, which survives reloads but is per tab), generated and
 * stored once otherwise. Without storage (Node) a fresh id is returned.
 */
export function stableClientId(
  storage: StorageLike | null = defaultSessionStorage(),
  key: string = DEFAULT_CLIENT_ID_KEY,
): string {
  if (storage) {
    try {
      const existing = storage.getItem(key);
      if (existing) return existing;
    } catch {
      /* fall through to a fresh id */
    }
  }
  const id = randomId();
  storeClientId(id, storage, key);
  return id;
}

/** Replaces the stored id (after another tab took ours over, close 4012). */
export function storeClientId(
  id: string,
  storage: StorageLike | null = defaultSessionStorage(),
  key: string = DEFAULT_CLIENT_ID_KEY,
): void {
  if (!storage) return;
  try {
    storage.setItem(key, id);
  } catch {
    /* quota or privacy mode: the id just won't survive a reload */
  }
}
