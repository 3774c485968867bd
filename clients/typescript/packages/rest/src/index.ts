/**
 * A typed client for the Roster REST API (`/api/v1`). The types are generated
 * from the server's OpenAPI document (`docs/openapi.json`, which the server
 * serves at `/api/v1/openapi.json`) by openapi-typescript; requests go through
 * openapi-fetch, so every path, parameter, body and answer is checked by the
 * compiler.
 *
 * ```ts
 * const api = createRestClient({ baseUrl: "http://127.0.0.1:7400", token });
 * const { data, error } = await api.GET("/api/v1/rooms/{room}/presence", {
 *   params: { path: { room: "Order:123" } },
 * });
 * ```
 */
import createClient, { type Client } from "openapi-fetch";
import type { components, paths } from "./schema";

export type { components, paths };
/** The document's schemas by name, e.g. `Schemas["RoomView"]`. */
export type Schemas = components["schemas"];
export type RestClient = Client<paths>;

export interface RestOptions {
  /** The server's address, e.g. `http://127.0.0.1:7400` (paths start with `/api/v1`). */
  baseUrl: string;
  /** A tenant's JWT, or the operator's admin key together with `tenant`. */
  token: string;
  /** With the admin key: the tenant acted on (`X-Tenant`). */
  tenant?: string;
  /** Another `fetch` (tests, older runtimes). */
  fetch?: typeof fetch;
}

export function createRestClient(opts: RestOptions): RestClient {
  const headers: Record<string, string> = { Authorization: `Bearer ${opts.token}` };
  if (opts.tenant !== undefined) headers["X-Tenant"] = opts.tenant;
  return createClient<paths>({
    baseUrl: opts.baseUrl,
    headers,
    ...(opts.fetch !== undefined ? { fetch: opts.fetch } : {}),
  });
}
