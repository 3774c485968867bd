import { useEffect, useMemo, useRef, useSyncExternalStore } from "react";

/** Compares two selected values: `true` keeps the previous one and skips the re-render. */
export type EqualityFn<T> = (a: T, b: T) => boolean;

/**
 * Shallow equality for selector results: equal when `Object.is`, or when both are
 * arrays with `Object.is`-equal items, plain objects with the same keys and
 * `Object.is`-equal values, or `Map`s with the same keys and `Object.is`-equal
 * values. Pass it as the `isEqual` of a selector hook that returns a new object or
 * array each time (`(p) => ({ x: p.cursor.x, y: p.cursor.y })`).
 */
export function shallowEqual<T>(a: T, b: T): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return false;
    return true;
  }
  if (Array.isArray(b)) return false;
  if (a instanceof Map) {
    if (!(b instanceof Map) || a.size !== b.size) return false;
    for (const [k, v] of a) if (!b.has(k) || !Object.is(v, b.get(k))) return false;
    return true;
  }
  if (b instanceof Map) return false;
  const protoA = Object.getPrototypeOf(a) as unknown;
  if (protoA !== Object.getPrototypeOf(b) || (protoA !== Object.prototype && protoA !== null)) return false;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  const ob = b as Record<string, unknown>;
  const oa = a as Record<string, unknown>;
  for (const k of ka) {
    if (!Object.prototype.hasOwnProperty.call(ob, k) || !Object.is(oa[k], ob[k])) return false;
  }
  return true;
}

/**
 * `useSyncExternalStore` that re-renders only when `selector(snapshot)` changes by
 * `isEqual` (default `Object.is`); React's own `use-sync-external-store/with-selector`,
 * without the dependency. The selector runs once per store snapshot (and again when
 * the selector itself changes, i.e. on the renders of the component), and while
 * the selection stays equal the previous value is returned as is.
 * @internal
 */
export function useSyncExternalStoreWithSelector<Snapshot, Selection>(
  subscribe: (onChange: () => void) => () => void,
  getSnapshot: () => Snapshot,
  getServerSnapshot: (() => Snapshot) | undefined,
  selector: (snapshot: Snapshot) => Selection,
  isEqual?: EqualityFn<Selection>,
): Selection {
  // The last value rendered (committed), shared by the memoized selectors of all renders.
  const committed = useRef<{ has: boolean; value: Selection } | null>(null);
  if (committed.current === null) committed.current = { has: false, value: undefined as Selection };
  const inst = committed.current;

  const [getSelection, getServerSelection] = useMemo(() => {
    let memoized = false;
    let memoSnapshot: Snapshot;
    let memoSelection: Selection;
    const select = (next: Snapshot): Selection => {
      if (!memoized) {
        memoized = true;
        memoSnapshot = next;
        const selection = selector(next);
        // A new selector (a render): keep the rendered value while it is equal.
        if (isEqual !== undefined && inst.has && isEqual(inst.value, selection)) {
          memoSelection = inst.value;
          return inst.value;
        }
        memoSelection = selection;
        return selection;
      }
      if (Object.is(memoSnapshot, next)) return memoSelection;
      const selection = selector(next);
      memoSnapshot = next;
      if (isEqual !== undefined && isEqual(memoSelection, selection)) return memoSelection;
      memoSelection = selection;
      return selection;
    };
    return [
      () => select(getSnapshot()),
      getServerSnapshot === undefined ? undefined : () => select(getServerSnapshot()),
    ] as const;
  }, [getSnapshot, getServerSnapshot, selector, isEqual, inst]);

  const value = useSyncExternalStore(subscribe, getSelection, getServerSelection);
  useEffect(() => {
    inst.has = true;
    inst.value = value;
  }, [inst, value]);
  return value;
}
