//! `/api/docs`: a small API reference page, Redoc rendering the OpenAPI
//! document at `/api/v1/openapi.json`. Its script is embedded in the binary
//! (`assets/redoc/`), so the page needs no network beyond this server.

use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;

use super::AppState;

const REDOC_JS: &[u8] = include_bytes!("../../assets/redoc/redoc.standalone.js");
/// In the script's URL, so a browser never keeps an older copy after an update.
const REDOC_VERSION: &str = "2.5.4";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/docs", get(page))
        .route(&format!("/api/docs/redoc-{REDOC_VERSION}.js"), get(script))
}

async fn page() -> Html<String> {
    Html(format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Roster REST API</title>
<style>body {{ margin: 0; }}</style>
</head>
<body>
<redoc spec-url="/api/v1/openapi.json"></redoc>
<script src="/api/docs/redoc-{REDOC_VERSION}.js"></script>
</body>
</html>
"#
    ))
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        REDOC_JS,
    )
}
