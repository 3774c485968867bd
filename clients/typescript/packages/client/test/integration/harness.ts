/**
 * Helpers for the integration tests against the real server started by the shared
 * `test-support/globalSetup.ts`: the server-level helpers of `test-support/server.ts`
 * (shared with @roster/react's tests), and clients of this package's source.
 */
import { onTestFinished } from "vitest";
import WebSocket from "ws";
import { RosterClient, type RosterClientOptions } from "../../src/index.js";
import { WS_URL, mintToken } from "../../../../test-support/server.js";

export {
  TENANT,
  WS_URL,
  adminToken,
  mintToken,
  ownServer,
  rest,
  server,
  serviceToken,
  sleep,
  uid,
  waitFor,
  type Claims,
  type OwnServer,
} from "../../../../test-support/server.js";

export interface TestClient {
  client: RosterClient;
  /** Every socket this client opened, in order. */
  sockets: WebSocket[];
  /** While true, new connections go to a closed port (the network is "down"). */
  block(on: boolean): void;
  /** Cuts the current TCP connection without a close frame. */
  dropConnection(): void;
}

/** A client on the `ws` package, closed after the test. */
export function testClient(userId: string, opts: Partial<RosterClientOptions> = {}): TestClient {
  const sockets: WebSocket[] = [];
  let blocked = false;
  class TrackedWebSocket extends WebSocket {
    constructor(url: string) {
      // Port 1 on loopback: refused at once, like a network that is down.
      super(blocked ? "ws://127.0.0.1:1/ws" : url);
      sockets.push(this);
    }
  }
  const client = new RosterClient({
    url: WS_URL,
    token: opts.getToken ? undefined : mintToken({ sub: userId, name: `${userId} name` }),
    device: "web",
    appVersion: "test",
    clientIdStorage: null,
    WebSocket: TrackedWebSocket,
    reconnect: { baseMs: 50, maxMs: 200 },
    ...opts,
  });
  onTestFinished(async () => {
    if (client.state !== "closed") await client.disconnect();
  });
  return {
    client,
    sockets,
    block(on: boolean) {
      blocked = on;
    },
    dropConnection() {
      const s = sockets.at(-1);
      if (!s) throw new Error("no socket");
      s.terminate();
    },
  };
}
