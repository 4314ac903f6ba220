//! Training data: the configured MNIST directory and uploaded IDX datasets.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{body_rejection, ApiQuery, BufferedMultipart};
use crate::http::schemas::DatasetInfoSchema;
use crate::http::state::AppState;
use crate::jobs::{DatasetInfo, Upload};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/datasets", get(list).post(upload))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DatasetList {
    #[schema(value_type = Vec<DatasetInfoSchema>)]
    pub datasets: Vec<DatasetInfo>,
}

/// List the datasets training jobs can use.
#[utoipa::path(get, path = "/v1/datasets", tag = "datasets",
    responses((status = 200, body = DatasetList)))]
async fn list(State(state): State<AppState>) -> Result<Json<DatasetList>, ApiError> {
    // A shared store is listed over the network: off the async threads.
    let datasets = state.with_jobs(|jobs| Ok(jobs.datasets().list())).await?;
    Ok(Json(DatasetList { datasets }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// Name of the new dataset: 1-64 characters of `[A-Za-z0-9_-]`, not `mnist`.
    pub name: String,
}

/// The parts of a dataset upload: IDX files, raw or gzipped, of 28×28 images and labels 0-9.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DatasetUpload {
    #[schema(content_media_type = "application/octet-stream")]
    train_images: Vec<u8>,
    #[schema(content_media_type = "application/octet-stream")]
    train_labels: Vec<u8>,
    #[schema(content_media_type = "application/octet-stream")]
    test_images: Option<Vec<u8>>,
    #[schema(content_media_type = "application/octet-stream")]
    test_labels: Option<Vec<u8>>,
}

/// Upload a dataset of IDX files.
#[utoipa::path(post, path = "/v1/datasets", tag = "datasets", params(UploadQuery),
    request_body(content = inline(DatasetUpload), content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Stored", body = DatasetInfoSchema),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 415, description = "Not multipart/form-data", body = ErrorBody),
        (status = 422, description = "Invalid name or IDX files", body = ErrorBody),
    ))]
async fn upload(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<UploadQuery>,
    BufferedMultipart(mut form): BufferedMultipart,
) -> Result<Response, ApiError> {
    let mut upload = Upload::default();
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|r| body_rejection(r.status(), r.body_text()))?
    {
        let name = field.name().unwrap_or("").to_string();
        let bytes = field
            .bytes()
            .await
            .map_err(|r| body_rejection(r.status(), r.body_text()))?
            .to_vec();
        match name.as_str() {
            "train_images" => upload.train_images = bytes,
            "train_labels" => upload.train_labels = bytes,
            "test_images" => upload.test_images = Some(bytes),
            "test_labels" => upload.test_labels = Some(bytes),
            other => return Err(ApiError::invalid(other, "unknown part")),
        }
    }
    if upload.train_images.is_empty() || upload.train_labels.is_empty() {
        return Err(ApiError::invalid(
            "train_images",
            "train_images and train_labels are required",
        ));
    }
    let jobs = state.jobs.clone();
    // Checking gunzips the files: stopped if the client leaves or the server stops.
    let info = state
        .cancellable(move || Ok(jobs.datasets().store(&q.name, &upload)?))
        .await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, "/v1/datasets".to_string())],
        Json(info),
    )
        .into_response())
}
