//! The OpenAPI document, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Roster REST API", description = "Presence, rooms, sessions, locks and lifecycle (SPEC §4)."),
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
    ),
    components(schemas(super::ErrorBody, super::ErrorDetail)),
    modifiers(&Bearer),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct Bearer;
impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
