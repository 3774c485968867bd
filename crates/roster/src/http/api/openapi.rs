//! The OpenAPI 3.1 document, generated from the handlers' annotations, plus
//! the conventions every operation shares (one home for them: [`Conventions`]):
//! the two ways to authenticate, the error answers any call can get, and the
//! tags. `docs/openapi.json` is this document, committed (a test keeps it equal).

use axum::Json;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use super::ErrorBody;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Roster REST API",
        description = "Presence, rooms, sessions, locks, lifecycle and the durable record of a Roster server (SPEC §4).\n\nAuthenticate with a tenant's JWT (`Authorization: Bearer <token>`; the roles in its `roles` claim decide what it may do), or with the operator's admin key (`Authorization: Bearer <admin key>` and `X-Tenant: <tenant>`). Errors are `{\"error\": {\"code\", \"message\"}}` with a stable `code` per status. Lists are pages: `{items, nextCursor}`; pass `nextCursor` back as `cursor` for the next page (null: the last page).",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    paths(
        super::presence::room_presence, super::presence::user_presence, super::presence::user_online, super::presence::batch,
        super::rooms::create, super::rooms::list, super::rooms::read, super::rooms::patch, super::rooms::remove,
        super::rooms::put_participant, super::rooms::delete_participant, super::rooms::room_types,
        super::sessions::list, super::sessions::kick,
        super::locks::list, super::locks::force_release,
        super::lifecycle::lifecycle,
        super::rooms::list_participants, super::rooms::create_room_type, super::rooms::put_room_type, super::rooms::delete_room_type,
        super::activity::list, super::activity::csv, super::activity::stats, super::activity::audit,
        super::activity::room_stats, super::activity::overview, super::activity::history,
        super::webhooks::list, super::webhooks::create, super::webhooks::read, super::webhooks::replace, super::webhooks::remove,
        super::alerts::list_rules, super::alerts::create_rule, super::alerts::read_rule, super::alerts::patch_rule, super::alerts::delete_rule,
        super::alerts::list_alerts, super::alerts::ack,
        super::stream::stream,
    ),
    components(schemas(super::ErrorBody, super::ErrorDetail, crate::events::PresenceEvent, crate::events::webhooks::WebhookBatch)),
    modifiers(&Conventions),
    tags(
        (name = "presence", description = "Who is online, and who is in a room: the live state, on every node of a cluster."),
        (name = "rooms", description = "Rooms as things: declared rooms, their settings and participants; room types."),
        (name = "sessions", description = "Live sessions (and kicking one), and the history of ended ones."),
        (name = "locks", description = "Field locks of a room."),
        (name = "lifecycle", description = "Records changed behind the users' backs: MUTATING / MUTATED (the REST twin of the Kafka events)."),
        (name = "activity", description = "The activity log: rows, CSV, counts and a room's audit."),
        (name = "stats", description = "Per-room statistics and the tenant overview."),
        (name = "alerts", description = "Alert rules (capacity, latency, heartbeat_missed, online_drop) and the alerts they fire: evaluated every `alerts.eval_interval` on one node of a cluster, stored, and POSTed to the rule's webhook signed with HMAC-SHA256."),
        (name = "stream", description = "The live stream (Server-Sent Events) the dashboard reads: tenant totals, rooms, activity and alerts as they change."),
        (name = "webhooks", description = "The presence event stream's webhook endpoints: each gets the tenant's events (`PresenceEvent`), in order, in batches signed with HMAC-SHA256 (docs/EVENTS.md)."),
    ),
)]
pub struct ApiDoc;

/// What every operation shares. An answer it can give on any route (a bad or
/// missing credential, a role too low, a wrong parameter, the rate limit, an
/// outage) is documented once as a component and referenced from each
/// operation; an operation's own description of the same status wins.
struct Conventions;

/// (status, component name, description), for every operation.
const ANY_CALL: [(&str, &str, &str); 7] = [
    ("400", "BadRequest", "The request is malformed: a body that is not JSON, or the admin key without a valid `X-Tenant`. Code `bad_request`."),
    ("401", "Unauthorized", "No `Authorization: Bearer` header, or a token that is expired, badly signed or for no tenant. Code `unauthorized`."),
    ("403", "Forbidden", "The token's roles do not allow this call (e.g. `admin`, `monitor` or `service` needed), or the room is private. Code `forbidden`."),
    ("422", "Invalid", "A parameter or field has the wrong shape or value; the message names it. Code `invalid`."),
    ("429", "RateLimited", "Above `limits.rest_requests_per_second` for this tenant. Code `rate_limited`."),
    ("500", "Internal", "A bug; logged with the correlation id the message names. Code `internal`."),
    ("503", "Unavailable", "Redis (the presence engine) or the database is unreachable; try again. Code `unavailable`."),
];

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("A tenant's token, signed with the configured secret or key (SPEC §3 \"Authentication\")."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "adminKey",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The operator's admin key (`auth.admin_key`), with `X-Tenant` naming the tenant acted on."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "tenant",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Tenant",
                "The tenant the admin key acts on.",
            ))),
        );
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                        .build(),
                )
                .build()
        };
        for (_, name, description) in ANY_CALL {
            components
                .responses
                .insert(name.to_string(), RefOr::T(error(description)));
        }
        components.responses.insert(
            "NotFound".into(),
            RefOr::T(error(
                "No such room, user, session, lock or room type. Code `not_found`.",
            )),
        );
        components.responses.insert(
            "PayloadTooLarge".into(),
            RefOr::T(error(
                "The body is above `limits.max_body_bytes`. Code `payload_too_large`.",
            )),
        );
        openapi.security = Some(vec![
            SecurityRequirement::new("bearer", Vec::<String>::new()),
            SecurityRequirement::new("adminKey", Vec::<String>::new())
                .add("tenant", Vec::<String>::new()),
        ]);
        for (path, item) in openapi.paths.paths.iter_mut() {
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                conventions(path, op);
            }
        }
    }
}

fn conventions(path: &str, op: &mut Operation) {
    let responses = &mut op.responses.responses;
    let mut add = |status: &str, name: &str| {
        responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
    };
    for (status, name, _) in ANY_CALL {
        add(status, name);
    }
    if path.contains('{') {
        add("404", "NotFound");
    }
    if op.request_body.is_some() {
        add("413", "PayloadTooLarge");
    }
}

pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// The document as `docs/openapi.json` holds it: pretty, with a final newline.
pub fn pretty() -> String {
    let mut s = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    /// `docs/openapi.json` is what the server serves, so a review sees the
    /// contract change. `UPDATE_OPENAPI=1 cargo test -p roster openapi` writes it.
    #[test]
    fn the_committed_document_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let now = super::pretty();
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &now).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == now,
            "docs/openapi.json differs from the generated document; \
             run `UPDATE_OPENAPI=1 cargo test -p roster openapi` and commit it"
        );
    }
}
