//! The one error type of the HTTP layer: every failure below is converted here, once, into a
//! status and a stable code, and sent as `{"error": {"code", "message"}}`. Details of server
//! faults (5xx) are logged, never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::engine::EngineError;
use crate::imaging::ImageError;
use crate::jobs::JobError;
use crate::store::StoreError;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The body of an error answer of the Open Inference Protocol routes (`/v2/…`), the shape
/// KServe clients read; the house code travels in the `x-error-code` header.
#[derive(Debug, Serialize, ToSchema)]
pub struct OipErrorBody {
    pub error: String,
}

/// What went wrong: a stable machine-readable code and a message for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// e.g. `invalid_request`, `not_found`, `queue_full`.
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// A well-formed request whose content is invalid; the message names the field.
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            format!("{field}: {message}"),
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", message)
    }

    /// A fault of the server: logged in full, reported without details.
    pub fn internal(context: &str, detail: impl std::fmt::Display) -> Self {
        tracing::error!("{context}: {detail}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("{context} failed; see the server log"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::NotFound(_) => ApiError::not_found(e.to_string()),
            JobError::Invalid { field, message } => ApiError::invalid(&field, message),
            JobError::QueueFull(m) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", m),
            JobError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            JobError::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down",
            ),
            JobError::Store(s) => s.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ApiError::not_found(format!("{m} not found")),
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            StoreError::Full(m) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", m),
            StoreError::Invalid(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_model", m)
            }
            StoreError::Io { path, source } => file_fault(&path, &source, "storage"),
            StoreError::StorageFull(m) => {
                tracing::error!("job database: {m}");
                storage_full()
            }
            StoreError::Unwritable(m) => {
                tracing::error!("job database: {m}");
                unwritable()
            }
            StoreError::Corrupt(m) => {
                tracing::error!("stored object unreadable: {m}");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store_corrupt",
                    "the stored copy of this object is damaged and cannot be read; \
                     delete it or restore it from a backup",
                )
            }
            StoreError::Busy(m) => {
                tracing::warn!("job database busy: {m}");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_busy",
                    "the job database is locked by another process; try again shortly",
                )
            }
            StoreError::Unavailable(m) => {
                tracing::warn!("store unavailable: {m}");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the job database or model store cannot be reached; try again shortly",
                )
            }
            other @ StoreError::Database(_) => ApiError::internal("storage", other),
        }
    }
}

fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28)
}

/// The answer to a file that could not be read or written, logged with its path (which the
/// answer leaves out): a full disk is 507, a data directory that cannot be written 503 (until
/// an operator fixes it), anything else a fault of the server in `context`.
fn file_fault(path: &std::path::Path, source: &std::io::Error, context: &str) -> ApiError {
    use std::io::ErrorKind::{PermissionDenied, ReadOnlyFilesystem};
    if is_disk_full(source) {
        tracing::error!("{}: {source}", path.display());
        storage_full()
    } else if matches!(source.kind(), PermissionDenied | ReadOnlyFilesystem) {
        tracing::error!("{}: {source}", path.display());
        unwritable()
    } else {
        ApiError::internal(context, format!("{}: {source}", path.display()))
    }
}

fn storage_full() -> ApiError {
    ApiError::new(
        StatusCode::INSUFFICIENT_STORAGE,
        "storage_full",
        "no space left on the server's disk to store this",
    )
}

fn unwritable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unwritable",
        "the server cannot write its data directory; try again once an operator has fixed it",
    )
}

impl From<crate::jobs::DatasetError> for ApiError {
    fn from(e: crate::jobs::DatasetError) -> Self {
        match e {
            crate::jobs::DatasetError::Engine(e) => e.into(),
            crate::jobs::DatasetError::Store(e) => e.into(),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid { field, message } => ApiError::invalid(&field, message),
            EngineError::Shape(m) => ApiError::invalid("input", m),
            EngineError::Data(d) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_data",
                d.to_string(),
            ),
            EngineError::Model(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_model", m)
            }
            EngineError::Io { path, source } => file_fault(&path, &source, "computation"),
            // Only a computation that was given up ends so: the server is stopping (a call
            // past its deadline or without its client gets no answer from here).
            EngineError::Cancelled => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down; the computation was stopped",
            ),
            other @ EngineError::Diverged(_) => ApiError::internal("computation", other),
        }
    }
}

impl From<crate::inference::InferenceError> for ApiError {
    fn from(e: crate::inference::InferenceError) -> Self {
        use crate::inference::InferenceError;
        match e {
            InferenceError::Overloaded(_) | InferenceError::Saturated { .. } => {
                ApiError::overloaded(e.to_string())
            }
            InferenceError::OverBudget { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "over_budget",
                e.to_string(),
            ),
            InferenceError::Engine(e) => e.into(),
            InferenceError::Internal(m) => ApiError::internal("inference", m),
        }
    }
}

impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::TooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "image_too_large",
                e.to_string(),
            ),
            ImageError::Unsupported => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_image",
                e.to_string(),
            ),
            ImageError::Corrupt(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_image",
                e.to_string(),
            ),
        }
    }
}

impl From<crate::render::RenderError> for ApiError {
    fn from(e: crate::render::RenderError) -> Self {
        ApiError::internal("rendering", e)
    }
}
