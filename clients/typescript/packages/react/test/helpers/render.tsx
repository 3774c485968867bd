import type { RosterClient } from "@roster/client";
import { act, render, type RenderResult } from "@testing-library/react";
import { StrictMode, type ReactNode } from "react";
import { RosterProvider } from "../../src/index.js";

/**
 * Runs the 0 ms timers already scheduled (the provider's delayed disconnect, the
 * hooks' delayed room leave / watch close), inside `act`. Timers of the same delay
 * fire in the order they were set, so whatever those do synchronously (send an
 * `UNSUB`, a `BYE`, an `UNWATCH`) has happened when this resolves.
 */
export async function flushTimers(): Promise<void> {
  await act(async () => {
    for (let i = 0; i < 2; i++) await new Promise((r) => setTimeout(r, 0));
  });
}

/** Renders `ui` under a provider of `client` (which connects it on mount). */
export function renderWith(
  client: RosterClient,
  ui: ReactNode,
  opts: { strict?: boolean } = {},
): RenderResult & { update(ui: ReactNode): void } {
  const wrap = (node: ReactNode) => {
    const tree = <RosterProvider client={client}>{node}</RosterProvider>;
    return opts.strict ? <StrictMode>{tree}</StrictMode> : tree;
  };
  const r = render(wrap(ui));
  return Object.assign(r, { update: (node: ReactNode) => r.rerender(wrap(node)) });
}
