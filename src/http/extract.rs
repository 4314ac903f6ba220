//! Extractors whose rejections come back in the API's error shape: JSON bodies, query strings
//! and multipart bodies.

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Multipart, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// `axum::Json` with errors as [`ApiError`]: a syntax error is 400, a body that does not fit
/// the schema (unknown field, wrong type) 422, a wrong content type 415, too large 413.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    /// Parses with plain serde_json first: tracking the path of every value, as
    /// `axum::Json` does for its error messages, costs about a third of the parse of a
    /// pixel array. Only a body that fails is parsed again through `axum::Json`, for the
    /// message that names the offending field.
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !json_content_type(req.headers()) {
            return Err(not_json());
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| body_rejection(r.status(), r.body_text()))?;
        if let Ok(v) = serde_json::from_slice::<T>(&bytes) {
            return Ok(ApiJson(v));
        }
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn not_json() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "expected Content-Type: application/json",
    )
}

/// `application/json` or any `application/…+json`, parameters aside (axum's rule).
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

pub fn json_rejection(rejection: JsonRejection) -> ApiError {
    let message = rejection.body_text();
    match rejection {
        JsonRejection::JsonDataError(_) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
        }
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", message)
        }
        JsonRejection::MissingJsonContentType(_) => not_json(),
        other => body_rejection(other.status(), other.body_text()),
    }
}

/// A failure to read the body: too large (413) or broken.
pub fn body_rejection(status: StatusCode, message: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(status, "body_too_large", message)
    } else {
        ApiError::bad_request(message)
    }
}

/// `axum::extract::Query` with errors as [`ApiError`] (422 naming the parameter).
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                e.body_text(),
            )),
            Err(e) => Err(ApiError::bad_request(e.body_text())),
        }
    }
}

/// A multipart body read whole (within the body limit) before it is parsed. Parsing while the
/// body streams in rescans what has arrived each time a piece comes: a 64 MB body with no
/// boundary in it took about 11 s of CPU to refuse. Parsed from one piece, it is one pass.
pub struct BufferedMultipart(pub Multipart);

impl<S: Send + Sync> FromRequest<S> for BufferedMultipart {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let whole = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(|r| body_rejection(r.status(), r.body_text()))?;
        let req = Request::from_parts(parts, axum::body::Body::from(whole));
        let form = Multipart::from_request(req, state)
            .await
            .map_err(|r| body_rejection(r.status(), r.body_text()))?;
        Ok(BufferedMultipart(form))
    }
}
