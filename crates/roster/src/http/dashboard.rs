//! `/dashboard`: the operator dashboard (SPEC §9), a page and its scripts,
//! styles and the charting library (uPlot), embedded into the binary at build
//! time from `crates/roster/dashboard/` — no Node and no build step to run the
//! server. The page reads the same REST API and live stream (`/api/v1/stream`)
//! any script can; it has no back door of its own, and logs in with a
//! `monitor` or `admin` token it keeps in the browser's session storage.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use include_dir::{include_dir, Dir};

use super::AppState;

static ASSETS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/dashboard");

/// Scripts and styles from this origin only; uPlot sets element styles.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(|| async { asset("index.html") }))
        .route("/dashboard/", get(|| async { asset("index.html") }))
        .route(
            "/dashboard/{*path}",
            get(|Path(p): Path<String>| async move { asset(&p) }),
        )
}

fn content_type(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or(path);
    match name.rsplit_once('.').map_or(name, |(_, ext)| ext) {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "json" => "application/json",
        "txt" | "md" | "LICENSE" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn asset(path: &str) -> Response {
    let Some(file) = ASSETS.get_file(path) else {
        return (StatusCode::NOT_FOUND, "no such dashboard file").into_response();
    };
    let mut r = file.contents().into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The page changes with the binary: revalidate rather than cache for long.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_its_chart_library_are_embedded() {
        assert!(ASSETS.get_file("index.html").is_some());
        let vendor = ASSETS.get_dir("vendor").expect("dashboard/vendor");
        assert!(vendor
            .files()
            .any(|f| f.path().extension().is_some_and(|e| e == "js")));
        assert_eq!(asset("nope.js").status(), StatusCode::NOT_FOUND);
        assert_eq!(content_type("vendor/LICENSE"), "text/plain; charset=utf-8");
        assert_eq!(content_type("js/api.js"), "text/javascript; charset=utf-8");
        assert_eq!(asset("../Cargo.toml").status(), StatusCode::NOT_FOUND);
    }
}
