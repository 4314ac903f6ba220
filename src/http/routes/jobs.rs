//! Training jobs: submit, list, look at, cancel, and follow as a Server-Sent Events stream.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::Stream;
use tokio::sync::broadcast::error::RecvError;

use crate::engine::spec::TrainingSpec;
use crate::http::dto::{Job, JobList, JobListQuery};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::schemas::TrainingSpecSchema;
use crate::http::state::AppState;
use crate::jobs::JobEvent;
use crate::store::JobStatus;

/// Most jobs in one page of `GET /v1/jobs`.
pub const MAX_PAGE: usize = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/jobs", post(submit).get(list))
        .route("/v1/jobs/{id}", get(show))
        .route("/v1/jobs/{id}/cancel", post(cancel))
}

/// The event stream lives outside the request deadline.
pub fn streaming_router() -> Router<AppState> {
    Router::new().route("/v1/jobs/{id}/events", get(events))
}

/// Queue a training job.
///
/// The spec is validated before queuing (unknown fields, impossible sizes, limits); the job
/// runs when a worker is free. Poll `Location` or follow `/v1/jobs/{id}/events`.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs",
    request_body = TrainingSpecSchema,
    responses(
        (status = 202, description = "Queued", body = Job,
            headers(("Location" = String, description = "The job's URL"))),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "API key missing or wrong", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid spec; the message names the field", body = ErrorBody),
        (status = 429, description = "The queue is full", body = ErrorBody),
        (status = 503, description = "Shutting down (`shutting_down`), or the job database is locked by another process (`store_busy`)", body = ErrorBody),
    ))]
async fn submit(
    State(state): State<AppState>,
    ApiJson(spec): ApiJson<TrainingSpec>,
) -> Result<Response, ApiError> {
    let jobs = state.jobs.clone();
    let job = tokio::task::spawn_blocking(move || jobs.submit(spec))
        .await
        .map_err(|e| ApiError::internal("submitting", e))??;
    let location = format!("/v1/jobs/{}", job.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(Job::from(job)),
    )
        .into_response())
}

/// List jobs, newest first.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(JobListQuery),
    responses(
        (status = 200, body = JobList),
        (status = 422, description = "Unknown status or bad cursor", body = ErrorBody),
    ))]
async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<JobListQuery>,
) -> Result<Json<JobList>, ApiError> {
    let status = q
        .status
        .as_deref()
        .map(|s| {
            JobStatus::parse(s).ok_or_else(|| {
                ApiError::invalid(
                    "status",
                    "must be queued, running, succeeded, failed or cancelled",
                )
            })
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("must be in 1..={MAX_PAGE}"),
        ));
    }
    let before = q
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<i64>()
                .map_err(|_| ApiError::invalid("cursor", "not a cursor from this API"))
        })
        .transpose()?;
    let page = state
        .with_jobs(move |jobs| jobs.list(status, limit, before))
        .await?;
    Ok(Json(JobList {
        jobs: page.jobs.into_iter().map(Job::from).collect(),
        next_cursor: page.next.map(|n| n.to_string()),
    }))
}

/// One job: status, progress, metrics and the resulting model.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(
        state.with_jobs(move |jobs| jobs.get(&id)).await?.into(),
    ))
}

/// Cancel a job.
///
/// A queued job is cancelled at once, a running one within one mini-batch (its status turns
/// `cancelled` when it has stopped), also while its model is evaluated on the test set. Once
/// the model file is being written the job is committed: the answer shows `cancel_requested`
/// true, and the job still ends `succeeded` with its model. Cancelling a cancelled job changes
/// nothing.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job after the request", body = Job),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The job already succeeded or failed", body = ErrorBody),
        (status = 503, description = "The job database is locked by another process (`store_busy`)", body = ErrorBody),
    ))]
async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(
        state.with_jobs(move |jobs| jobs.cancel(&id)).await?.into(),
    ))
}

/// Follow a job as Server-Sent Events.
///
/// Events: `status` (the whole job object, first and on every status change), `progress`
/// (about four times a second while training) and `epoch` (the metrics of a finished epoch).
/// The stream ends after the job ends.
#[utoipa::path(get, path = "/v1/jobs/{id}/events", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses(
        (status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
        (status = 404, body = ErrorBody),
    ))]
async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // Subscribe before reading the job, so no change falls between the two.
    let rx = state.jobs.subscribe();
    let job = {
        let id = id.clone();
        state.with_jobs(move |jobs| jobs.get(&id)).await?
    };
    let shutdown = state.shutdown.clone();
    let stream = futures_util::stream::unfold(
        StreamState {
            state,
            id,
            rx,
            shutdown,
            first: Some(job),
            done: false,
            recheck: tokio::time::interval_at(
                tokio::time::Instant::now() + RECHECK_EVERY,
                RECHECK_EVERY,
            ),
        },
        next_event,
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// How often an event stream looks at the stored job when no event came.
const RECHECK_EVERY: Duration = Duration::from_secs(5);

struct StreamState {
    state: AppState,
    id: String,
    rx: tokio::sync::broadcast::Receiver<JobEvent>,
    shutdown: tokio::sync::watch::Receiver<bool>,
    first: Option<crate::store::JobRecord>,
    done: bool,
    recheck: tokio::time::Interval,
}

fn status_event(job: crate::store::JobRecord) -> (Event, bool) {
    let done = job.status.is_terminal();
    let event = Event::default()
        .event("status")
        .json_data(Job::from(job))
        .unwrap_or_else(|_| Event::default().event("status"));
    (event, done)
}

async fn next_event(mut s: StreamState) -> Option<(Result<Event, Infallible>, StreamState)> {
    if let Some(job) = s.first.take() {
        let (event, done) = status_event(job);
        s.done = done;
        return Some((Ok(event), s));
    }
    if s.done {
        return None;
    }
    loop {
        let received = tokio::select! {
            r = s.rx.recv() => Some(r),
            _ = s.shutdown.wait_for(|stop| *stop) => return None,
            // Now and then the job as stored: an end recorded where no event was sent (a
            // lapsed job cancelled by another replica's claim) still ends the stream.
            _ = s.recheck.tick() => None,
        };
        let Some(received) = received else {
            let id = s.id.clone();
            let job = s.state.with_jobs(move |jobs| jobs.get(&id)).await.ok()?;
            if !job.status.is_terminal() {
                continue;
            }
            let (event, done) = status_event(job);
            s.done = done;
            return Some((Ok(event), s));
        };
        let event = match received {
            Ok(e) if e.job() != s.id => continue,
            Ok(JobEvent::CancelRequested { .. }) => continue,
            Ok(JobEvent::Progress { progress, .. }) => Event::default()
                .event("progress")
                .json_data(&progress)
                .ok()?,
            Ok(JobEvent::Epoch { metrics, .. }) => {
                Event::default().event("epoch").json_data(&metrics).ok()?
            }
            // A status change, or missed events: send the job as it is now.
            Ok(JobEvent::Status { .. }) | Err(RecvError::Lagged(_)) => {
                let id = s.id.clone();
                let job = s.state.with_jobs(move |jobs| jobs.get(&id)).await.ok()?;
                let (event, done) = status_event(job);
                s.done = done;
                event
            }
            Err(RecvError::Closed) => return None,
        };
        return Some((Ok(event), s));
    }
}
