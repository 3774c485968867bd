import { RosterClient, type ConnectionState, type RosterClientOptions } from "@roster/client";
import { createContext, useCallback, useContext, useEffect, useMemo, useRef, useSyncExternalStore, type ReactNode } from "react";

/** The client of the nearest {@link RosterProvider}; `null` outside one. */
export const RosterContext = createContext<RosterClient | null>(null);
RosterContext.displayName = "RosterContext";

/** Providers currently connecting each client, and a disconnect waiting to happen. */
const connections = new WeakMap<RosterClient, { providers: number; timer: ReturnType<typeof setTimeout> | null }>();

interface ProviderBase {
  children?: ReactNode;
  /**
   * Connect when mounted and disconnect (`BYE`) when unmounted. Default `true`;
   * `false` leaves the connection to the application.
   */
  autoConnect?: boolean;
}

export type RosterProviderProps = ProviderBase &
  (
    | {
        /** A client made by the application (it may be shared with non-React code). */
        client: RosterClient;
        options?: never;
      }
    | {
        /** Options of a client the provider creates once (later changes are ignored). */
        options: RosterClientOptions;
        client?: never;
      }
  );

/**
 * Makes a {@link RosterClient} available to the hooks and components below it.
 * Connects on mount and disconnects (`BYE`) on unmount, unless
 * `autoConnect={false}`; providers of the same client count as one.
 *
 * ```tsx
 * <RosterProvider options={{ url: "wss://presence.example.com/ws", getToken }}>
 *   <App />
 * </RosterProvider>
 * ```
 */
export function RosterProvider(props: RosterProviderProps): ReactNode {
  const given = props.client;
  // Created once, lazily (StrictMode may render twice and drop one: never connected, it holds nothing).
  const owned = useRef<RosterClient | null>(null);
  if (!given && !owned.current) owned.current = new RosterClient(props.options!);
  const client = given ?? owned.current!;
  const autoConnect = props.autoConnect !== false;

  useEffect(() => {
    if (!autoConnect) return;
    const use = connections.get(client) ?? { providers: 0, timer: null };
    connections.set(client, use);
    use.providers++;
    if (use.timer !== null) clearTimeout(use.timer);
    use.timer = null;
    // Failures are reported through the client's state and `closed`/`error` events.
    client.connect().catch(() => {});
    return () => {
      use.providers--;
      if (use.providers > 0) return;
      // A moment later, so that StrictMode's mount → unmount → mount (or a provider
      // moved in the tree) keeps the connection instead of BYE + a new session.
      use.timer = setTimeout(() => {
        use.timer = null;
        if (use.providers === 0) void client.disconnect();
      }, 0);
    };
  }, [client, autoConnect]);

  return <RosterContext.Provider value={client}>{props.children}</RosterContext.Provider>;
}

/** @internal the client of the nearest provider, or `null`. */
export function useOptionalClient(): RosterClient | null {
  return useContext(RosterContext);
}

/** The client of the nearest {@link RosterProvider}; throws outside one. */
export function useRosterClient(): RosterClient {
  const client = useContext(RosterContext);
  if (!client) throw new Error("@roster/react: wrap this component in a <RosterProvider>");
  return client;
}

export interface UseRosterResult {
  client: RosterClient;
  /** `idle` → `connecting` → `open` ⇄ `reconnecting` → `closed`. */
  state: ConnectionState;
  /** This connection's session id, once welcomed. */
  sessionId: string | null;
  /** The authenticated user, once welcomed. */
  userId: string | null;
}

/**
 * The connection state of the nearest provider's client: `idle` → `connecting`
 * → `open` ⇄ `reconnecting` → `closed`. Re-renders only when it changes.
 *
 * ```tsx
 * const status = useConnectionStatus();
 * {status === "reconnecting" && <p role="status">Reconnecting…</p>}
 * ```
 */
export function useConnectionStatus(): ConnectionState {
  const client = useRosterClient();
  const subscribe = useCallback((onChange: () => void) => client.on("state", () => onChange()), [client]);
  const getState = useCallback(() => client.state, [client]);
  return useSyncExternalStore(subscribe, getState, getState);
}

/** The client and its connection state (re-renders on every state change). */
export function useRoster(): UseRosterResult {
  const client = useRosterClient();
  const state = useConnectionStatus();
  const sessionId = client.sessionId;
  const userId = client.userId;
  return useMemo(() => ({ client, state, sessionId, userId }), [client, state, sessionId, userId]);
}
