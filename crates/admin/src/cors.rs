//! CORS for browsers calling the admin API directly (ALwrity's frontend sends
//! `Authorization` on every call, so preflight requests must allow it).
//!
//! Only the origins listed in `[admin] cors_allowed_origins` (or `*`) get CORS headers; a
//! preflight from any other origin is refused with 403, and the browser blocks the call.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::AdminError;
use crate::state::AdminState;

const ALLOWED_METHODS: &str = "GET, POST, PUT, DELETE, OPTIONS";
const ALLOWED_HEADERS: &str = "authorization, content-type, x-api-key, x-user-id";

pub async fn cors(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned);
    let Some(origin) = origin else {
        return next.run(request).await;
    };
    let config = state.config();
    let allowed = &config.admin.cors_allowed_origins;
    let wildcard = allowed.iter().any(|o| o == "*");
    let permitted = wildcard || allowed.contains(&origin);
    let is_preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if is_preflight {
        if !permitted {
            return AdminError::Forbidden(format!(
                "origin {origin:?} is not in [admin] cors_allowed_origins"
            ))
            .into_response();
        }
        let mut response = StatusCode::NO_CONTENT.into_response();
        let h = response.headers_mut();
        allow_origin(h, &origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOWED_METHODS),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOWED_HEADERS),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        return response;
    }
    let mut response = next.run(request).await;
    if permitted {
        allow_origin(response.headers_mut(), &origin);
    }
    response
}

/// Echoes the origin (never `*`, so that credentials may be sent) and varies the cache on it.
fn allow_origin(h: &mut axum::http::HeaderMap, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}
