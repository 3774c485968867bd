/**
 * An in-memory WebSocket and a scripted "server" for unit tests of the client's
 * state machine. Each `new WS(url)` registers a {@link FakeSocket}; by default it
 * opens on the next tick and answers `HELLO` with a `WELCOME`.
 */
import type { WelcomeMessage } from "../../src/protocol.js";

type Sent = Record<string, unknown> & { type: string; ref?: number | string };

export class FakeSocket {
  readyState = 0;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  sent: Sent[] = [];
  closedWith: { code?: number; reason?: string } | null = null;

  constructor(
    readonly url: string,
    private readonly server: FakeServer,
  ) {}

  send(data: string): void {
    if (this.readyState !== 1) throw new Error("not open");
    const msg = JSON.parse(data) as Sent;
    this.sent.push(msg);
    this.server.received(this, msg);
  }

  close(code?: number, reason?: string): void {
    if (this.readyState >= 2) return;
    this.closedWith = { code, reason };
    this.readyState = 3;
    setTimeout(() => this.onclose?.({ code: code ?? 1005, reason: reason ?? "" }), 0);
  }

  // --- driven by the test ---------------------------------------------------

  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }

  deliver(msg: object): void {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }

  /** The server closes the connection (or the network drops it: 1006). */
  drop(code = 1006, reason = ""): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  /** Messages of one type sent on this socket. */
  of(type: string): Sent[] {
    return this.sent.filter((m) => m.type === type);
  }
}

export interface FakeServerOptions {
  /** Open sockets automatically (default true). */
  autoOpen?: boolean;
  /** Answer HELLO automatically (default: WELCOME). Return false to leave it unanswered. */
  onHello?: (sock: FakeSocket, hello: Sent) => boolean | void;
  /** Extra handler for every other message. */
  onMessage?: (sock: FakeSocket, msg: Sent) => void;
  welcome?: Partial<WelcomeMessage>;
}

export class FakeServer {
  sockets: FakeSocket[] = [];
  private sessionCounter = 0;
  readonly WebSocket: new (url: string) => FakeSocket;

  constructor(public opts: FakeServerOptions = {}) {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const server = this;
    this.WebSocket = class extends FakeSocket {
      constructor(url: string) {
        super(url, server);
        server.sockets.push(this);
        if (server.opts.autoOpen !== false) setTimeout(() => this.readyState === 0 && this.open(), 0);
      }
    };
  }

  get last(): FakeSocket {
    const s = this.sockets.at(-1);
    if (!s) throw new Error("no socket yet");
    return s;
  }

  /** Every message sent on every socket, in order. */
  get allSent(): Sent[] {
    return this.sockets.flatMap((s) => s.sent);
  }

  welcomeFor(hello: Sent, extra: Partial<WelcomeMessage> = {}): WelcomeMessage {
    return {
      type: "WELCOME",
      ...(hello.ref !== undefined ? { ref: hello.ref } : {}),
      sessionId: `sess-${++this.sessionCounter}`,
      userId: "alice",
      tenantId: "acme",
      heartbeatIntervalMs: 15_000,
      sessionTimeoutMs: 45_000,
      serverTime: new Date().toISOString(),
      resumed: false,
      rooms: [],
      ...this.opts.welcome,
      ...extra,
    };
  }

  received(sock: FakeSocket, msg: Sent): void {
    if (msg.type === "HELLO") {
      const handled = this.opts.onHello?.(sock, msg);
      if (handled === undefined) sock.deliver(this.welcomeFor(msg));
      return;
    }
    if (msg.type === "BYE") {
      // Like the server: the connection is closed with 1000.
      setTimeout(() => sock.drop(1000, "bye"), 0);
    }
    this.opts.onMessage?.(sock, msg);
  }
}
