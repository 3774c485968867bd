/**
 * The generated REST client against the real server: every call below is
 * type-checked against docs/openapi.json (`npm run typecheck`), and each answer
 * is what the document says.
 */
import { describe, expect, it } from "vitest";
import { createRestClient } from "../../src/index";
import { adminToken, server, serviceToken, uid } from "../../../../test-support/server";

const baseUrl = `http://${server.addr}`;

describe("@roster/rest, generated from the OpenAPI document", () => {
  it("creates a room, lists presence, posts a lifecycle event and reads the activity log", async () => {
    const admin = createRestClient({ baseUrl, token: adminToken() });
    const key = `Order:${uid("o")}`;

    const created = await admin.POST("/api/v1/rooms", {
      body: { key, type: "COLLABORATION", capacity: 10, tags: ["orders"] },
    });
    expect(created.response.status).toBe(201);
    expect(created.data?.key).toBe(key);
    expect(created.data?.type).toBe("COLLABORATION");
    expect(created.data?.capacity).toBe(10);

    const again = await admin.POST("/api/v1/rooms", { body: { key } });
    expect(again.response.status).toBe(409);
    expect(again.error?.error.code).toBe("conflict");

    const presence = await admin.GET("/api/v1/rooms/{room}/presence", {
      params: { path: { room: key } },
    });
    expect(presence.response.status).toBe(200);
    expect(presence.data?.count).toBe(0);
    expect(presence.data?.users).toEqual([]);

    const service = createRestClient({ baseUrl, token: serviceToken() });
    const [entity, id] = key.split(":") as [string, string];
    const lifecycle = await service.POST("/api/v1/lifecycle", {
      body: { type: "MUTATING", entity, id, userId: "etl" },
    });
    expect(lifecycle.response.status).toBe(202);
    expect(lifecycle.data?.stale).toBe(true);
    expect(lifecycle.data?.busyBy).toBe("etl");

    const rooms = await admin.GET("/api/v1/rooms", { params: { query: { tag: "orders" } } });
    expect(rooms.data?.items.map((r) => r.key)).toContain(key);

    // The activity log is written in batches: poll until the rows are there.
    let types: string[] = [];
    for (let i = 0; i < 50 && !(types.includes("room_created") && types.includes("mutating")); i++) {
      const log = await admin.GET("/api/v1/activity", { params: { query: { room: key, limit: 50 } } });
      expect(log.response.status).toBe(200);
      types = (log.data?.items ?? []).map((r) => r.type);
      if (!types.includes("mutating")) await new Promise((r) => setTimeout(r, 100));
    }
    expect(types).toContain("room_created");
    expect(types).toContain("mutating");
  });

  it("answers errors in the documented shape", async () => {
    const nobody = createRestClient({ baseUrl, token: "not-a-token" });
    const r = await nobody.GET("/api/v1/rooms");
    expect(r.response.status).toBe(401);
    expect(r.error?.error.code).toBe("unauthorized");
  });
});
