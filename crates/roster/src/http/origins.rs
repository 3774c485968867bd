//! Which web pages may use this server: `http.allowed_origins`, checked on the
//! WebSocket upgrade (a browser's `Origin`, refused with 403 before the upgrade)
//! and answered as CORS on the REST API.
//!
//! Browsers send `Origin` on every WebSocket upgrade and every cross-origin fetch,
//! and only browsers do: a request without it (a server, a CLI, a native app) is
//! never refused here, since it is not a page acting with a user's network position.
//! REST authenticates with bearer tokens, not cookies, so CORS only decides which
//! pages may read the answers. This file never looks at tokens.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::api::ApiError;
use super::AppState;
use crate::core::error::ErrorCode;

/// How long a browser may cache a preflight answer (`Access-Control-Max-Age`).
const PREFLIGHT_MAX_AGE_SECS: &str = "600";
const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE";
const ALLOW_HEADERS: &str = "Authorization, Content-Type, X-Tenant";
/// Where CORS applies: the REST API.
const API: &str = "/api/v1";
/// An `Origin` longer than this is not echoed into a message.
const MAX_ORIGIN_IN_MESSAGE: usize = 200;

/// The allow-list, lower-cased; `*` (or no `http.allowed_origins`) allows any.
pub struct AllowedOrigins {
    any: bool,
    list: Vec<String>,
}

impl AllowedOrigins {
    pub fn from_config(origins: Option<&[String]>) -> Self {
        match origins {
            None => Self {
                any: true,
                list: Vec::new(),
            },
            Some(list) => Self {
                any: list.iter().any(|o| o == "*"),
                list: list.iter().map(|o| o.to_ascii_lowercase()).collect(),
            },
        }
    }

    /// Scheme and host compare case-insensitively (RFC 6454 §4 lower-cases them).
    pub fn allows(&self, origin: &str) -> bool {
        self.any || self.list.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    /// The request's `Origin`, when it has one; a value that is not visible ASCII
    /// is never an allowed origin, so it is kept as an empty string.
    pub fn origin_of(headers: &HeaderMap) -> Option<&str> {
        headers
            .get(header::ORIGIN)
            .map(|v| v.to_str().unwrap_or(""))
    }
}

/// The answer to a WebSocket upgrade from a page whose origin is not allowed.
pub fn forbidden(origin: &str) -> Response {
    let shown: String = origin.chars().take(MAX_ORIGIN_IN_MESSAGE).collect();
    ApiError::new(
        ErrorCode::Forbidden,
        format!("origin {shown:?} is not in http.allowed_origins"),
    )
    .into_response()
}

/// CORS for the REST API (`/api/v1/…`): preflights answered here (204 for an allowed origin,
/// 403 otherwise), and `Access-Control-Allow-Origin` on the answers to allowed
/// origins. Disallowed origins get no CORS headers at all.
pub async fn cors(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if !(path == API || (path.starts_with(API) && path[API.len()..].starts_with('/'))) {
        return next.run(req).await;
    }
    let Some(origin) = AllowedOrigins::origin_of(req.headers()).map(str::to_string) else {
        return next.run(req).await;
    };
    let allowed = app.origins.allows(&origin);
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = if preflight {
        if !allowed {
            let mut resp = forbidden(&origin);
            vary_origin(resp.headers_mut());
            return resp;
        }
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(PREFLIGHT_MAX_AGE_SECS),
        );
        resp
    } else {
        next.run(req).await
    };
    vary_origin(resp.headers_mut());
    if allowed {
        if let Ok(v) = HeaderValue::from_str(&origin) {
            resp.headers_mut()
                .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
    }
    resp
}

/// The answer depends on `Origin`: caches must key on it.
fn vary_origin(h: &mut HeaderMap) {
    h.append(header::VARY, HeaderValue::from_static("origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list() {
        let list = vec!["https://App.example".to_string()];
        let o = AllowedOrigins::from_config(Some(&list));
        assert!(o.allows("https://app.example"));
        assert!(!o.allows("https://app.example:444"));
        assert!(!o.allows("http://app.example"));
        assert!(!o.allows("null"));
        let any = AllowedOrigins::from_config(Some(&["*".to_string()]));
        assert!(any.allows("https://whatever.test"));
        assert!(AllowedOrigins::from_config(None).allows("null"));
        assert!(!AllowedOrigins::from_config(Some(&[])).allows("https://a"));
    }
}
