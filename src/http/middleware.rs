//! Request middleware: a request id (taken from `x-request-id` or made) in the log span and
//! the response, metrics by route, a deadline for short calls, and the API key check.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::error::ApiError;
use super::state::AppState;

pub const REQUEST_ID: &str = "x-request-id";

fn request_id(req: &Request) -> String {
    req.headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| crate::store::new_id("req"))
}

/// Logs each request in a span carrying its id, counts it by route template and echoes the id.
pub async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let id = request_id(&req);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().clone();
    let span = tracing::info_span!("request", id = %id, method = %method, route = %route);
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    let seconds = started.elapsed().as_secs_f64();
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::info!(status, ms = (seconds * 1000.0) as u64, "served");
    });
    state
        .metrics
        .observe_request(&route, method.as_str(), status, seconds);
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    response
}

/// The Open Inference Protocol's routes (`/v2/…`) answer errors in its own shape,
/// `{"error": "message"}`, which KServe clients read; the house code goes in the
/// `x-error-code` header. Every error of those paths passes here, whoever made it (the
/// handler, an extractor, the key check, the deadline, the fallback).
pub async fn oip_errors(req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/v2/") {
        return next.run(req).await;
    }
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // House error bodies are small; anything larger is not one.
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let house: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
    let detail = house.as_ref().map(|v| &v["error"]);
    let message = detail
        .and_then(|d| d["message"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    if let Some(code) = detail
        .and_then(|d| d["code"].as_str())
        .and_then(|c| HeaderValue::from_str(c).ok())
    {
        parts.headers.insert("x-error-code", code);
    }
    let body = serde_json::json!({ "error": message }).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// Answers 503 `timeout` when a short call takes longer than the configured deadline.
pub async fn deadline(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // Uploads of models and datasets may take long on slow links; they are bounded by size.
    let upload =
        req.method() == Method::POST && matches!(req.uri().path(), "/v1/models" | "/v1/datasets");
    if upload {
        return next.run(req).await;
    }
    let limit = Duration::from_secs(state.config.request_timeout_secs.max(1));
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request took longer than {}s", limit.as_secs()),
        )
        .into_response(),
    }
}

/// With an API key configured, every call that changes state or computes needs
/// `Authorization: Bearer KEY`, compared in constant time: every POST, PUT and DELETE, and
/// the GETs that run a model (`samples.png`, `features.png`). Plain reads need it too when
/// `api_key_for_reads` is set. Health probes and the page stay open ([`is_open`]).
pub async fn authorize(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(key) = state
        .config
        .api_key
        .as_ref()
        .map(|k| k.expose())
        .filter(|k| !k.is_empty())
    else {
        return next.run(req).await;
    };
    let plain_read = is_safe(req.method()) && !computes(req.uri().path());
    if (plain_read && !state.config.api_key_for_reads) || is_open(req.uri().path()) {
        return next.run(req).await;
    }
    let offered = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if constant_time_eq(offered.as_bytes(), key.as_bytes()) {
        next.run(req).await
    } else {
        let mut response = ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this call needs Authorization: Bearer <API key>",
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        response
    }
}

/// The GET routes that run a model rather than read what is stored: they cost as much as
/// the POSTs and are guarded like them.
fn computes(path: &str) -> bool {
    path.starts_with("/v1/models/")
        && (path.ends_with("/samples.png") || path.ends_with("/features.png"))
}

/// Refuses a state-changing call that a web page on another origin made: a browser marks
/// such requests (`Sec-Fetch-Site: cross-site` or `same-site`, or an `Origin` naming another
/// host than the one called), and "simple" ones (a form, a text body) reach the server
/// without a CORS preflight. Origins allowed by the CORS setting may call; so may clients
/// that are not browsers, which send neither header.
pub async fn same_origin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if is_safe(req.method()) || !cross_site(&req, &state.config.cors_origins) {
        return next.run(req).await;
    }
    ApiError::new(
        axum::http::StatusCode::FORBIDDEN,
        "cross_site_request",
        "a web page on another origin may not call this; allow its origin with \
         DBN_CORS_ORIGINS",
    )
    .into_response()
}

fn cross_site(req: &Request, allowed: &[String]) -> bool {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let origin = header("origin");
    if origin.is_some_and(|o| allowed.iter().any(|a| a == "*" || a.trim() == o)) {
        return false;
    }
    if let Some(site) = header("sec-fetch-site") {
        // `none`: typed by the user or sent by a tool; `same-origin`: the project's page.
        return !matches!(site, "same-origin" | "none");
    }
    match origin {
        // No browser made this call.
        None => false,
        Some(origin) => {
            let host = header("x-forwarded-host").or(header("host"));
            let authority = origin.split_once("://").map(|(_, rest)| rest);
            authority.is_none() || authority != host
        }
    }
}

/// Health probes stay open so orchestrators can reach them without the key, and so does the
/// page, which asks for the key itself.
fn is_open(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/v2/health/live" | "/v2/health/ready"
    ) || crate::http::routes::ui::PATHS.contains(&path)
}

/// Equality whose time depends only on the lengths, not on where the bytes differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= (x ^ y) as usize;
    }
    diff == 0
}

/// Every error answer in the house shape, whoever made it: the router's 405, the
/// extractors' plain-text refusals (an id that is not UTF-8, a malformed header) and empty
/// bodies become `{"error": {"code", "message"}}` with a code named after the status. Answers
/// that say "try again later" (429, 503) carry `Retry-After`. House answers pass unchanged.
pub async fn house_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    if matches!(status.as_u16(), 429 | 503) && !parts.headers.contains_key(header::RETRY_AFTER) {
        parts.headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECS),
        );
    }
    let json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        return Response::from_parts(parts, body);
    }
    // Plain-text refusals are short; anything longer is cut.
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text.chars().take(500).collect()
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    let mut answer = ApiError::new(status, status_code_name(status), message).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}

/// The interactive API documentation (`/docs`, Swagger UI) loads only its own files: no
/// script, style or frame from elsewhere, and no other page may frame it.
pub async fn docs_policy(req: Request, next: Next) -> Response {
    let docs = req.uri().path().starts_with("/docs");
    let mut response = next.run(req).await;
    if docs {
        content_policy(response.headers_mut(), DOCS_CSP);
    }
    response
}

/// Sets a page's content security policy, and tells browsers not to guess content types.
pub fn content_policy(headers: &mut axum::http::HeaderMap, csp: &'static str) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// GET, HEAD and OPTIONS: the methods that, by HTTP's rules, change nothing.
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Swagger UI styles its elements inline and shows images as data URIs; everything else is
/// its own files and the document at `/openapi.json`.
const DOCS_CSP: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; \
                        img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; \
                        form-action 'none'";

/// Seconds a client should wait before trying an overloaded or timed-out call again.
const RETRY_AFTER_SECS: &str = "1";

/// The house code for an answer that did not come with one.
fn status_code_name(status: axum::http::StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        404 => "not_found",
        405 => "method_not_allowed",
        406 => "not_acceptable",
        408 => "request_timeout",
        411 => "length_required",
        413 => "payload_too_large",
        414 => "uri_too_long",
        415 => "unsupported_media_type",
        422 => "unprocessable",
        429 => "overloaded",
        503 => "unavailable",
        s if s >= 500 => "internal",
        _ => "bad_request",
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
        // Lengths that differ by a multiple of 256 still differ.
        assert!(!constant_time_eq(&[0u8; 65536], b""));
    }
}
