//! The HTTP API: the only place that knows axum, utoipa and status codes. It builds the
//! routers ([`router`], [`worker_router`]) over an [`AppState`] whose stores
//! [`crate::startup`] chose, and serves connections ([`serve`]).

pub mod documented_limits;
pub mod dto;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod routes;
pub mod schemas;
mod serve;
pub(crate) use serve::{serve, ConnectionLimits};
pub mod state;

use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::ServeConfig;
use error::ApiError;
use state::AppState;

/// The whole API with its middleware.
pub fn router(state: AppState) -> Router {
    let config = state.config.clone();
    let short = Router::new()
        .merge(routes::jobs::router())
        .merge(routes::models::router(config.max_model_bytes()))
        .merge(routes::aliases::router())
        .merge(routes::classify::router())
        .merge(routes::codes::router())
        .merge(routes::generation::router())
        .merge(routes::sequences::router())
        .merge(routes::datasets::router())
        .merge(routes::oip::router())
        .merge(routes::ops::router())
        .merge(routes::ui::router())
        .layer(from_fn_with_state(state.clone(), middleware::deadline));
    let mut app = Router::new()
        .merge(short)
        .merge(routes::jobs::streaming_router())
        .merge(SwaggerUi::new("/docs").url("/openapi.json", openapi::for_config(&config)))
        .fallback(not_found)
        .layer(from_fn_with_state(state.clone(), middleware::authorize))
        .layer(from_fn_with_state(state.clone(), middleware::same_origin))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(RequestBodyTimeoutLayer::new(Duration::from_secs(
            config.body_idle_timeout_secs.max(1),
        )));
    if let Some(cors) = cors(&config) {
        app = app.layer(cors);
    }
    app.layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn(middleware::docs_policy))
        .layer(axum::middleware::from_fn(middleware::house_errors))
        .layer(axum::middleware::from_fn(middleware::oip_errors))
        .layer(from_fn_with_state(state.clone(), middleware::observe))
        .with_state(state)
}

/// A worker replica's endpoints: health and metrics for its probes and scraper, nothing else.
pub fn worker_router(state: AppState) -> Router {
    Router::new()
        .merge(routes::ops::router())
        .fallback(|| async {
            ApiError::not_found(
                "this replica only trains (DBN_ROLE=worker); the API is on the api replicas",
            )
        })
        .layer(from_fn_with_state(state.clone(), middleware::observe))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the request failed inside the server; see the server log",
    )
    .into_response()
}

fn cors(config: &ServeConfig) -> Option<CorsLayer> {
    if config.cors_origins.is_empty() {
        return None;
    }
    let origins = if config.cors_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            config
                .cors_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim()).ok()),
        )
    };
    let request_id = HeaderName::from_static(middleware::REQUEST_ID);
    Some(
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                header::ACCEPT,
                request_id.clone(),
            ])
            .expose_headers([header::LOCATION, request_id])
            .max_age(Duration::from_secs(3600)),
    )
}
