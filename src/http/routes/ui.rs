//! The page for people at `/`: HTML, CSS and JavaScript compiled into the binary, so the
//! server shows itself with no files beside it and no network. The page calls the same public
//! API as any other client.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::http::state::AppState;

const INDEX: &str = include_str!("../ui/index.html");
const SCRIPT: &str = include_str!("../ui/app.js");
const STYLE: &str = include_str!("../ui/app.css");

/// Only this origin's files, images drawn in the page (blob:, data:) and calls to this API.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// Paths of the page, which stay reachable without the API key (the page asks for it).
pub const PATHS: [&str; 3] = ["/", "/ui/app.js", "/ui/app.css"];

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            PATHS[0],
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            PATHS[1],
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            PATHS[2],
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The files change with the binary; revalidating each load is cheap on a local server.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    crate::http::middleware::content_policy(headers, CSP);
    response
}
