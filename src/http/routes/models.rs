//! Models: list, describe, delete, download and import.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::http::dto::{Model, ModelList};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::state::AppState;
use crate::store::new_id;

pub fn router(max_model_bytes: usize) -> Router<AppState> {
    Router::new()
        .route(
            "/v1/models",
            get(list)
                .post(import)
                .layer(DefaultBodyLimit::max(max_model_bytes)),
        )
        .route("/v1/models/{id}", get(show).delete(remove))
        .route("/v1/models/{id}/weights", get(weights))
}

/// List models.
#[utoipa::path(get, path = "/v1/models", tag = "models",
    responses((status = 200, body = ModelList)))]
async fn list(State(state): State<AppState>) -> Json<ModelList> {
    let aliases = state.models.aliases();
    Json(ModelList {
        models: state
            .models
            .list()
            .iter()
            .map(|m| Model::with_aliases(m, &aliases))
            .collect(),
    })
}

/// One model (by id or alias): architecture, training spec, dataset, metrics (test error),
/// created, aliases.
#[utoipa::path(get, path = "/v1/models/{id}", tag = "models",
    params(("id" = String, Path, description = "Model id")),
    responses((status = 200, body = Model), (status = 404, body = ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Model>, ApiError> {
    let model = state.model(&id).await?;
    Ok(Json(Model::with_aliases(&model, &state.models.aliases())))
}

/// Delete a model.
#[utoipa::path(delete, path = "/v1/models/{id}", tag = "models",
    params(("id" = String, Path, description = "Model id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let models = state.models.clone();
    let id = state.resolve(&id);
    tokio::task::spawn_blocking(move || models.delete(&id))
        .await
        .map_err(|e| ApiError::internal("deleting", e))??;
    Ok(StatusCode::NO_CONTENT)
}

/// Download the model file (safetensors, with the model card in its metadata).
#[utoipa::path(get, path = "/v1/models/{id}/weights", tag = "models",
    params(("id" = String, Path, description = "Model id")),
    responses(
        (status = 200, description = "The safetensors file", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, body = ErrorBody),
    ))]
async fn weights(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let models = state.models.clone();
    let id = state.resolve(&id);
    let name = id.clone();
    let bytes = tokio::task::spawn_blocking(move || models.read_file(&name))
        .await
        .map_err(|e| ApiError::internal("reading", e))??;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}.safetensors\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// Import a model file (safetensors as written by this server or `dbn-serve train`).
///
/// The file is checked completely (format, version, shapes) and against the parameter limit
/// before it is stored under a new id.
#[utoipa::path(post, path = "/v1/models", tag = "models",
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "Stored", body = Model),
        (status = 401, body = ErrorBody),
        (status = 413, description = "Larger than the largest allowed model", body = ErrorBody),
        (status = 415, description = "Not sent as application/octet-stream", body = ErrorBody),
        (status = 422, description = "Not a valid model file", body = ErrorBody),
    ))]
async fn import(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    // A model is a file of bytes: a form or a text body (which a web page can send without
    // asking) is not one.
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if !matches!(
        kind.as_deref(),
        Some("application/octet-stream" | "application/x-safetensors")
    ) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the model file as application/octet-stream",
        ));
    }
    let body = body.map_err(|r| crate::http::extract::body_rejection(r.status(), r.body_text()))?;
    let models = state.models.clone();
    let limits = state.config.limits();
    let entry = tokio::task::spawn_blocking(move || {
        let (dbn, card) = crate::engine::persist::from_bytes(&body)?;
        limits.check_model(&dbn)?;
        Ok::<_, ApiError>(models.insert(&new_id("model"), &body, dbn, card)?)
    })
    .await
    .map_err(|e| ApiError::internal("importing", e))??;
    let location = format!("/v1/models/{}", entry.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(Model::from(&*entry)),
    )
        .into_response())
}
