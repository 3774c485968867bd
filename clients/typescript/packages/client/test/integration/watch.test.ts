import { describe, expect, it } from "vitest";
import { formatLastSeen, type WatchStatusChange } from "../../src/index.js";
import { testClient, uid, waitFor } from "./harness.js";

describe("watch against the real server", () => {
  it("live statuses with devices and lastSeen, away from heartbeats, offline with a lastSeen", async () => {
    const bob = uid("bob");
    const nobody = uid("nobody");
    const a = testClient(uid("alice"));
    await a.client.connect();
    const w = a.client.watch([bob, nobody]);
    const changes: WatchStatusChange[] = [];
    w.on("status", (c) => changes.push(c));
    await waitFor(() => w.statuses.size === 2, "snapshot");
    expect(w.get(nobody)).toEqual({ status: "offline", lastSeen: null, devices: [] });
    expect(w.get(bob)?.status).toBe("offline");
    expect(formatLastSeen(w.get(nobody)!.lastSeen, "en")).toBe("");

    const b = testClient(bob, { device: "mobile" });
    await b.client.connect();
    await waitFor(() => w.get(bob)?.status === "online", "bob online");
    expect(w.get(bob)?.devices).toEqual(["mobile"]);
    expect(w.online).toEqual([bob]);

    // No activity reported: away after away_after (1 s on the test server).
    b.client.setActive(false);
    await waitFor(() => w.get(bob)?.status === "away", "bob away", 5000);
    // Activity again: reported at once, back online.
    b.client.setActive(null);
    await waitFor(() => w.get(bob)?.status === "online", "bob back online", 3000);

    const before = Date.now();
    await b.client.disconnect();
    await waitFor(() => w.get(bob)?.status === "offline", "bob offline");
    const lastSeen = w.get(bob)!.lastSeen!;
    expect(lastSeen).toBeInstanceOf(Date);
    expect(Math.abs(lastSeen.getTime() - before)).toBeLessThan(2000);
    expect(formatLastSeen(lastSeen, "en")).toBe("now");
    expect(formatLastSeen(lastSeen, "de", { now: lastSeen.getTime() + 5 * 60_000 })).toBe("vor 5 Minuten");
    // The documented shape: {userId, status, previous} (+ lastSeen, devices and the whole entries).
    expect(changes.map((c) => `${c.userId === bob ? "bob" : "nobody"}:${c.previous ?? "-"}>${c.status}`)).toEqual([
      "bob:->offline",
      "nobody:->offline",
      "bob:offline>online",
      "bob:online>away",
      "bob:away>online",
      "bob:online>offline",
    ]);
    const last = changes.at(-1)!;
    expect(last.entry).toBe(w.get(bob));
    expect(last.lastSeen).toBe(lastSeen);
    expect(last.devices).toEqual([]);
    expect(last.previousEntry).toMatchObject({ status: "online", devices: ["mobile"] });
  });

  it("watches are re-established after a reconnect", async () => {
    const bob = uid("bob");
    const a = testClient(uid("alice"));
    await a.client.connect();
    const w = a.client.watch([bob]);
    await waitFor(() => w.get(bob)?.status === "offline", "snapshot");
    // Drop alice's connection and keep her away longer than the grace: her
    // session ends, with it the server-side watch.
    a.block(true);
    a.dropConnection();
    await new Promise((r) => setTimeout(r, 1500));
    const b = testClient(bob);
    await b.client.connect();
    a.block(false);
    await waitFor(() => a.client.state === "open", "alice back", 3000);
    expect(a.client.welcome?.resumed).toBe(false);
    await waitFor(() => w.get(bob)?.status === "online", "bob online seen after re-WATCH");
    await b.client.disconnect();
    await waitFor(() => w.get(bob)?.status === "offline", "live events again");
  });
});
