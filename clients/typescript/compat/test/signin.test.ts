/**
 * User authentication (`pusher:signin`) and watchlists: `pusher.signin()` with
 * user_data `{id, user_info?, watchlist?}` → `pusher:signin_success`, then
 * `online` / `offline` events for the watched users on `pusher.user.watchlist`.
 */
import { afterEach, describe, expect, test } from "vitest";
import { AFTER_GRACE_MS, GRACE_MS, closeAll, connect, sleep, uid, waitFor, type PusherClient } from "./support.js";

afterEach(closeAll);

async function signedIn(c: PusherClient): Promise<PusherClient> {
  c.pusher.signin();
  await c.next("pusher:signin_success");
  return c;
}

describe("signin and watchlist", () => {
  test("signin_success echoes the user_data; pusher-js takes the user", async () => {
    const id = uid("ann");
    const a = await signedIn(await connect({ signin: { id, user_info: { name: "Ann" } } }));
    const ok = a.seen("pusher:signin_success")[0]!;
    expect(JSON.parse(ok.data.user_data)).toEqual({ id, user_info: { name: "Ann" } });
    await waitFor(() => a.pusher.user.user_data !== null, "pusher-js to take the user_data");
    expect(a.pusher.user.user_data).toEqual({ id, user_info: { name: "Ann" } });
  });

  test("after signin, pusher-js's own #server-to-user-<id> subscription is accepted", async () => {
    // pusher-js subscribes to `#server-to-user-<id>` once signed in (for sendToUser);
    // Pusher answers it with subscription_succeeded.
    const id = uid("ann");
    const a = await signedIn(await connect({ signin: { id } }));
    const channel = `#server-to-user-${id}`;
    await sleep(500);
    expect({
      errors: a.pusherErrors(),
      subscriptionErrors: a.seen("pusher:subscription_error", channel).map((f) => f.data),
    }).toEqual({ errors: [], subscriptionErrors: [] });
    expect(a.seen("pusher_internal:subscription_succeeded", channel)).toHaveLength(1);
  });

  test("a watched user signing in is online; its disconnect is offline after the grace", async () => {
    const aId = uid("ann");
    const bId = uid("ben");
    const a = await signedIn(await connect({ signin: { id: aId, watchlist: [bId] } }));
    await sleep(200);
    expect(a.watch).toEqual([]); // Ben is not online: nothing to say yet

    const b = await signedIn(await connect({ signin: { id: bId } }));
    await waitFor(() => a.watch.length >= 1, "online for Ben");
    expect(a.watch).toEqual([{ name: "online", user_ids: [bId] }]);

    const closedAt = Date.now();
    b.close();
    await waitFor(() => a.watch.length >= 2, "offline for Ben", GRACE_MS + 5000);
    expect(Date.now() - closedAt).toBeGreaterThanOrEqual(GRACE_MS - 100);
    expect(a.watch).toEqual([
      { name: "online", user_ids: [bId] },
      { name: "offline", user_ids: [bId] },
    ]);
  });

  test("a watched user subscribing to a presence channel is online", async () => {
    const aId = uid("ann");
    const bId = uid("ben");
    const a = await signedIn(await connect({ signin: { id: aId, watchlist: [bId] } }));
    const b = await connect({ user: { user_id: bId, user_info: { name: "Ben" } } });
    await b.presence(uid("presence-lobby"));
    await waitFor(() => a.watch.length >= 1, "online for Ben");
    expect(a.watch).toEqual([{ name: "online", user_ids: [bId] }]);

    b.close();
    await waitFor(() => a.watch.length >= 2, "offline for Ben", GRACE_MS + 5000);
    expect(a.watch[1]).toEqual({ name: "offline", user_ids: [bId] });
  });

  test("a watched user already online is announced right after signin; a reload inside the grace is not offline", async () => {
    const aId = uid("ann");
    const bId = uid("ben");
    const cId = uid("cat"); // never connects
    const b1 = await signedIn(await connect({ signin: { id: bId } }));
    const a = await signedIn(await connect({ signin: { id: aId, watchlist: [bId, cId] } }));
    await waitFor(() => a.watch.length >= 1, "online for Ben");
    expect(a.watch).toEqual([{ name: "online", user_ids: [bId] }]);

    b1.close();
    await sleep(GRACE_MS / 4);
    await signedIn(await connect({ signin: { id: bId } }));
    await sleep(AFTER_GRACE_MS);
    expect(a.watch).toEqual([{ name: "online", user_ids: [bId] }]);
  });
});
