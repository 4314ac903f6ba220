//! Aliases: names that point at models (`default` first), usable wherever a model id is.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::ApiJson;
use crate::http::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/aliases", get(list))
        .route("/v1/aliases/{name}", get(show).put(set).delete(remove))
}

/// An alias and the model it points at.
#[derive(Debug, Serialize, ToSchema)]
pub struct Alias {
    pub name: String,
    pub model_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AliasList {
    pub aliases: Vec<Alias>,
}

/// Where to point an alias.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AliasTarget {
    /// The id of a stored model (not another alias).
    pub model_id: String,
}

/// List aliases.
#[utoipa::path(get, path = "/v1/aliases", tag = "models",
    responses((status = 200, body = AliasList)))]
async fn list(State(state): State<AppState>) -> Json<AliasList> {
    let aliases = state
        .models
        .aliases()
        .into_iter()
        .map(|(name, model_id)| Alias { name, model_id })
        .collect();
    Json(AliasList { aliases })
}

/// One alias.
#[utoipa::path(get, path = "/v1/aliases/{name}", tag = "models",
    params(("name" = String, Path, description = "Alias name")),
    responses((status = 200, body = Alias), (status = 404, body = ErrorBody)))]
async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Alias>, ApiError> {
    let model_id = state
        .models
        .aliases()
        .remove(&name)
        .ok_or_else(|| ApiError::not_found(format!("alias {name:?} not found")))?;
    Ok(Json(Alias { name, model_id }))
}

/// Create or move an alias.
///
/// The alias then stands for the model in every route that takes a model id (an alias is
/// looked up before model ids). Moving it is one atomic write: a concurrent call resolves it
/// to the old model or the new one. Other replicas of a shared store see the move at their
/// next listing (`DBN_MODEL_REFRESH_SECS`).
#[utoipa::path(put, path = "/v1/aliases/{name}", tag = "models",
    params(("name" = String, Path, description = "Alias name: 1-64 of [A-Za-z0-9_-]")),
    request_body = AliasTarget,
    responses(
        (status = 200, description = "Created or moved", body = Alias),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 404, description = "No model by that id", body = ErrorBody),
        (status = 409, description = "The name is a model's id", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Invalid name", body = ErrorBody),
    ))]
async fn set(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(target): ApiJson<AliasTarget>,
) -> Result<Json<Alias>, ApiError> {
    crate::store::check_alias_name(&name).map_err(|e| ApiError::invalid("name", e))?;
    let models = state.models.clone();
    let (alias, id) = (name.clone(), target.model_id.clone());
    tokio::task::spawn_blocking(move || {
        if models.get(&alias).is_ok() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("{alias:?} is a model's id; an alias needs a name of its own"),
            ));
        }
        Ok(models.set_alias(&alias, &id)?)
    })
    .await
    .map_err(|e| ApiError::internal("moving an alias", e))??;
    Ok(Json(Alias {
        name,
        model_id: target.model_id,
    }))
}

/// Delete an alias (the model stays).
#[utoipa::path(delete, path = "/v1/aliases/{name}", tag = "models",
    params(("name" = String, Path, description = "Alias name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
    ))]
async fn remove(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let models = state.models.clone();
    let alias = name.clone();
    let removed = tokio::task::spawn_blocking(move || models.delete_alias(&alias))
        .await
        .map_err(|e| ApiError::internal("deleting an alias", e))??;
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("alias {name:?} not found")))
    }
}
