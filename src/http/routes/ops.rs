//! Operations: liveness, readiness and Prometheus metrics.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::http::dto::Health;
use crate::http::metrics::Gauges;
use crate::http::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// Liveness: the process answers. Asks no store, so a slow database cannot get replicas
/// restarted.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = Health)))]
async fn healthz(State(state): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        models: state.models.list().len(),
        workers_alive: state.jobs.workers_ok(),
    })
}

/// Readiness: the job database answers and, in a replica that trains, the training workers
/// are alive.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let ok = state
        .with_jobs(|jobs| Ok(jobs.healthy()))
        .await
        .unwrap_or(false);
    let h = Health {
        status: if ok { "ok" } else { "unavailable" }.into(),
        models: state.models.list().len(),
        workers_alive: state.jobs.workers_ok(),
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(h))
}

/// Prometheus metrics (text format): requests by route and status with latency histograms,
/// jobs by status, queue depth, training pace, inference latency.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
async fn metrics(State(state): State<AppState>) -> Response {
    let jobs = state
        .with_jobs(|jobs| jobs.counts())
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(s, n)| (s.as_str(), n))
        .collect();
    let gauges = Gauges {
        jobs,
        training_examples_per_second: state.jobs.examples_per_sec(),
        job_panics: state.jobs.panics(),
        models: state.models.list().len(),
        inference: state.inference.snapshot(),
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&gauges),
    )
        .into_response()
}
