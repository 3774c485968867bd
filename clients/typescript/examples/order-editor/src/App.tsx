import {
  FieldLockIndicator,
  LastSeen,
  PresenceIndicator,
  RosterProvider,
  useEntityState,
  useFieldLock,
  useMyState,
  useOnlineStatus,
  usePresence,
  useRoster,
} from "@roster/react";
import { useEffect, useMemo, useState, type ReactNode } from "react";

/**
 * What the page reads from its URL:
 * `?token=<JWT>&url=ws://127.0.0.1:7400/ws[&order=123][&friends=alice,bob,carol]`.
 * Dev tokens come from `roster token --user alice --tenant acme` (or a test).
 */
export interface Config {
  token: string | null;
  url: string;
  orderId: string;
  friends: string[];
}

export function readConfig(search: string): Config {
  const q = new URLSearchParams(search);
  return {
    token: q.get("token"),
    url: q.get("url") ?? `ws://${window.location.hostname || "127.0.0.1"}:7400/ws`,
    orderId: q.get("order") ?? "123",
    friends: (q.get("friends") ?? "alice,bob,carol")
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean),
  };
}

/** Debug record of who the page showed as here, read by the end-to-end tests. */
interface PresenceRecord {
  /** user ids of the others, in the latest render */
  others: string[];
  /** every distinct `others` list shown, with the time it appeared */
  history: { t: number; others: string[] }[];
  /** when the room's status last became `joined` */
  joinedAt: number | null;
}
declare global {
  interface Window {
    __presence?: PresenceRecord;
  }
}

export function App({ config }: { config: Config }): ReactNode {
  if (!config.token) {
    return (
      <main className="order-editor">
        <h1>Order editor</h1>
        <p role="alert">
          Open this page with <code>?token=…&amp;url=ws://…/ws</code> (a token from <code>roster token --user alice</code>).
        </p>
      </main>
    );
  }
  return (
    <RosterProvider options={{ url: config.url, token: config.token, device: "web", appVersion: "example" }}>
      <OrderPage orderId={config.orderId} friends={config.friends} />
    </RosterProvider>
  );
}

type Fields = { customer: string; totalAmount: string; note: string };
type MyState = { field: keyof Fields | null };

function OrderPage({ orderId, friends }: { orderId: string; friends: string[] }): ReactNode {
  const order = useMemo(() => ({ entity: "Order", id: orderId }), [orderId]);
  const { state, userId } = useRoster();
  const presence = usePresence<MyState>(order, { state: { field: null } });
  const [values, setValues] = useState<Fields>({ customer: "ACME Corp.", totalAmount: "199.00", note: "" });

  const othersIds = presence.others.map((m) => m.userId);
  const key = othersIds.join(",");
  useEffect(() => {
    const rec = (window.__presence ??= { others: [], history: [], joinedAt: null });
    rec.others = othersIds;
    rec.history.push({ t: Date.now(), others: othersIds });
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [key]);

  useEffect(() => {
    const rec = (window.__presence ??= { others: [], history: [], joinedAt: null });
    if (presence.status === "joined") rec.joinedAt = Date.now();
  }, [presence.status]);

  return (
    <main className="order-editor" data-connection={state} data-room-status={presence.status}>
      <header>
        <h1>Order {orderId}</h1>
        <p className="me" data-testid="me">
          {userId ? `You are ${userId}` : "Connecting…"} <span className="connection">({state})</span>
        </p>
      </header>

      <section aria-label="Who is here" className="here">
        <h2>Who is here</h2>
        <PresenceIndicator room={order} max={5} size={32} />
        <ul data-testid="present-users" className="visually-hidden">
          {presence.others.map((m) => (
            <li key={m.userId} data-user-id={m.userId}>
              {m.name ?? m.userId}
            </li>
          ))}
        </ul>
        {presence.count === 1 && <p className="alone">Nobody else is looking at this order.</p>}
      </section>

      <StaleBanner order={order} />

      <form className="fields" onSubmit={(e) => e.preventDefault()}>
        <LockedInput order={order} field="customer" label="Customer" values={values} setValues={setValues} />
        <LockedInput order={order} field="totalAmount" label="Total amount" values={values} setValues={setValues} />
        <LockedInput order={order} field="note" label="Note" values={values} setValues={setValues} multiline />
      </form>

      <FriendsList friends={friends.filter((f) => f !== userId)} />
    </main>
  );
}

function StaleBanner({ order }: { order: { entity: string; id: string } }): ReactNode {
  const { stale, busyBy, version } = useEntityState(order);
  if (!stale) return version ? <p className="version" data-testid="version">Version {version}</p> : null;
  return (
    <p role="alert" className="stale-banner" data-testid="stale-banner">
      This order is being changed by {busyBy ?? "someone"}. Your view may be out of date.
    </p>
  );
}

function LockedInput(props: {
  order: { entity: string; id: string };
  field: keyof Fields;
  label: string;
  values: Fields;
  setValues: (f: (v: Fields) => Fields) => void;
  multiline?: boolean;
}): ReactNode {
  const { order, field, label, values, setValues, multiline } = props;
  const lock = useFieldLock(order, field);
  const [, setMe] = useMyState<MyState>(order);
  const common = {
    ...lock.bind,
    id: `field-${field}`,
    name: field,
    "data-testid": `field-${field}`,
    "data-lock": lock.lockedByOther ? "other" : lock.lockedByMe ? "mine" : "free",
    value: values[field],
    onFocus: () => {
      lock.bind.onFocus();
      setMe({ field });
    },
    onBlur: () => {
      lock.bind.onBlur();
      setMe({ field: null });
    },
  };
  const onChange = (e: { target: { value: string } }) => setValues((v) => ({ ...v, [field]: e.target.value }));
  return (
    <div className={`field field--${common["data-lock"]}`}>
      <label htmlFor={common.id}>{label}</label>
      {multiline ? <textarea rows={3} {...common} onChange={onChange} /> : <input {...common} onChange={onChange} />}
      <span data-testid={`lock-${field}`} className="field__lock">
        <FieldLockIndicator room={order} field={field} />
      </span>
    </div>
  );
}

function FriendsList({ friends }: { friends: string[] }): ReactNode {
  const statuses = useOnlineStatus(friends);
  return (
    <section aria-label="Friends" className="friends">
      <h2>Friends</h2>
      <ul data-testid="friends">
        {friends.map((id) => {
          const s = statuses.get(id);
          const status = s?.status ?? "offline";
          return (
            <li key={id} data-friend={id} data-status={status} className={`friend friend--${status}`}>
              <span className="friend__dot" aria-hidden="true" />
              <span className="friend__name">{id}</span> <span className="friend__status">{status}</span>
              {status === "offline" && s?.lastSeen && (
                <>
                  {" · last seen "}
                  <LastSeen date={s.lastSeen} />
                </>
              )}
            </li>
          );
        })}
      </ul>
    </section>
  );
}
