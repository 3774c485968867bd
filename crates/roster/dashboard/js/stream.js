// The live stream (GET /api/v1/stream, Server-Sent Events read through fetch(),
// since EventSource cannot send an Authorization header), reconnected with
// exponential back-off (0.5 s doubling up to 15 s, with jitter) when it ends or
// fails. 401/403 stop it: the token is no longer good.

import { readEvents } from "./api.js";

const MAX_DELAY_MS = 15_000;
/** No byte at all (not even a keep-alive) for this long: the connection is dead. */
const SILENCE_MS = 60_000;

/**
 * handlers: onEvent(name, data), onStatus(state, info) with state
 * "connecting" | "connected" | "reconnecting" | "stopped", onOpen(isReconnect),
 * onAuthError(status, message).
 * Returns { stop() }.
 */
export function startStream(api, handlers) {
  const outer = new AbortController();
  let attempt = 0;
  let opened = 0;

  const sleep = (ms) =>
    new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      outer.signal.addEventListener("abort", () => {
        clearTimeout(t);
        resolve();
      });
    });

  async function once() {
    const ctl = new AbortController();
    const abort = () => ctl.abort();
    outer.signal.addEventListener("abort", abort);
    let watchdog;
    const arm = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(abort, SILENCE_MS);
    };
    try {
      arm();
      const res = await api.openStream(ctl.signal);
      if (res.status === 401 || res.status === 403) {
        let message = "";
        try {
          message = (await res.json()).error.message;
        } catch {
          /* no JSON body */
        }
        handlers.onAuthError(res.status, message);
        return "auth";
      }
      if (!res.ok || !res.body) return "failed";
      attempt = 0;
      handlers.onStatus("connected");
      handlers.onOpen(opened++ > 0);
      // Any chunk, keep-alives included, re-arms the watchdog.
      const body = res.body;
      const tee = new TransformStream({
        transform(chunk, c) {
          arm();
          c.enqueue(chunk);
        },
      });
      await readEvents({ body: body.pipeThrough(tee, { signal: ctl.signal }) }, (name, data) => {
        try {
          handlers.onEvent(name, data);
        } catch (e) {
          console.warn("dashboard: handling a stream event failed", name, e);
        }
      });
      return "ended";
    } catch {
      return "failed";
    } finally {
      clearTimeout(watchdog);
      outer.signal.removeEventListener("abort", abort);
    }
  }

  (async () => {
    handlers.onStatus("connecting");
    while (!outer.signal.aborted) {
      const how = await once();
      if (outer.signal.aborted || how === "auth") break;
      attempt++;
      const base = Math.min(MAX_DELAY_MS, 500 * 2 ** (attempt - 1));
      const delay = Math.round(base * (0.75 + Math.random() * 0.5));
      handlers.onStatus("reconnecting", { delay, attempt });
      await sleep(delay);
    }
    handlers.onStatus("stopped");
  })();

  return {
    stop() {
      outer.abort();
    },
  };
}
