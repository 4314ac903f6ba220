//! KServe's Open Inference Protocol (v2), so the server fits KServe and Triton tooling:
//! health, model metadata and readiness, and `infer` with an FP32 `[N, n_inputs]` tensor.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::engine::dbn::argmax_rows;
use crate::http::error::{ApiError, OipErrorBody};
use crate::http::extract::ApiJson;
use crate::http::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LiveResponse {
    pub live: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyResponse {
    pub ready: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelReadyResponse {
    pub name: String,
    pub ready: bool,
}

/// A tensor's name, type and shape (−1: any size).
#[derive(Debug, Serialize, ToSchema)]
pub struct TensorMetadata {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: String,
    pub inputs: Vec<TensorMetadata>,
    pub outputs: Vec<TensorMetadata>,
}

/// An input tensor: `data` is flat in row-major order, or nested.
#[derive(Debug, Deserialize, ToSchema)]
pub struct InferInput {
    pub name: String,
    pub shape: Vec<i64>,
    /// Must be `FP32`.
    pub datatype: String,
    #[schema(value_type = Vec<f32>)]
    pub data: serde_json::Value,
}

/// Which outputs to return (default: all).
#[derive(Debug, Deserialize, ToSchema)]
pub struct RequestedOutput {
    pub name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct InferRequest {
    pub id: Option<String>,
    pub inputs: Vec<InferInput>,
    pub outputs: Option<Vec<RequestedOutput>>,
}

/// An output tensor; `data` is flat in row-major order.
#[derive(Debug, Serialize, ToSchema)]
pub struct InferOutput {
    pub name: String,
    pub shape: Vec<usize>,
    pub datatype: String,
    #[schema(value_type = Vec<f64>)]
    pub data: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: String,
    pub id: Option<String>,
    pub outputs: Vec<InferOutput>,
}

/// Liveness (OIP v2).
#[utoipa::path(get, path = "/v2/health/live", tag = "oip-v2",
    responses((status = 200, body = LiveResponse)))]
async fn live() -> Json<LiveResponse> {
    Json(LiveResponse { live: true })
}

/// Readiness (OIP v2): the store and the workers are up.
#[utoipa::path(get, path = "/v2/health/ready", tag = "oip-v2",
    responses((status = 200, body = ReadyResponse), (status = 503, body = ReadyResponse)))]
async fn ready(State(state): State<AppState>) -> (StatusCode, Json<ReadyResponse>) {
    let ok = state
        .with_jobs(|jobs| Ok(jobs.healthy()))
        .await
        .unwrap_or(false);
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(ReadyResponse { ready: ok }))
}

/// Model metadata (OIP v2). The model name is its id.
#[utoipa::path(get, path = "/v2/models/{name}", tag = "oip-v2",
    params(("name" = String, Path, description = "Model id")),
    responses((status = 200, body = ModelMetadata), (status = 404, body = OipErrorBody)))]
async fn metadata(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ModelMetadata>, ApiError> {
    let model = state.model(&name).await?;
    let classes = model.dbn.label_classes() as i64;
    Ok(Json(ModelMetadata {
        name: model.id.clone(),
        versions: vec!["1".into()],
        platform: "dbn-serve".into(),
        inputs: vec![TensorMetadata {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![-1, model.dbn.n_inputs() as i64],
        }],
        outputs: vec![
            TensorMetadata {
                name: "probabilities".into(),
                datatype: "FP32".into(),
                shape: vec![-1, classes],
            },
            TensorMetadata {
                name: "label".into(),
                datatype: "INT64".into(),
                shape: vec![-1],
            },
        ],
    }))
}

/// Model readiness (OIP v2): stored models are loaded and ready.
#[utoipa::path(get, path = "/v2/models/{name}/ready", tag = "oip-v2",
    params(("name" = String, Path, description = "Model id")),
    responses((status = 200, body = ModelReadyResponse), (status = 404, body = OipErrorBody)))]
async fn model_ready(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ModelReadyResponse>, ApiError> {
    let model = state.model(&name).await?;
    Ok(Json(ModelReadyResponse {
        name: model.id.clone(),
        ready: true,
    }))
}

/// Flattens nested JSON arrays of numbers.
fn flatten(value: &serde_json::Value, out: &mut Vec<f32>) -> Result<(), ApiError> {
    match value {
        serde_json::Value::Array(items) => items.iter().try_for_each(|v| flatten(v, out)),
        serde_json::Value::Number(n) => {
            out.push(n.as_f64().unwrap_or(f64::NAN) as f32);
            Ok(())
        }
        _ => Err(ApiError::invalid(
            "inputs[0].data",
            "must hold only numbers",
        )),
    }
}

/// Classify by free energy (OIP v2).
///
/// One input, `FP32` of shape `[N, n_inputs]` with values in [0, 1]. Outputs
/// `probabilities` (`FP32`, `[N, classes]`) and `label` (`INT64`, `[N]`).
#[utoipa::path(post, path = "/v2/models/{name}/infer", tag = "oip-v2",
    params(("name" = String, Path, description = "Model id")),
    request_body = InferRequest,
    responses(
        (status = 200, body = InferResponse),
        (status = 400, description = "Malformed JSON", body = OipErrorBody),
        (status = 413, description = "Body too large", body = OipErrorBody),
        (status = 404, body = OipErrorBody),
        (status = 415, description = "Not JSON", body = OipErrorBody),
        (status = 422, description = "Wrong datatype, shape or values", body = OipErrorBody),
        (status = 429, body = OipErrorBody),
    ))]
async fn infer(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<InferRequest>,
) -> Result<Json<InferResponse>, ApiError> {
    let model = state.model(&name).await?;
    let [input] = req.inputs.as_slice() else {
        return Err(ApiError::invalid(
            "inputs",
            "exactly one input tensor is expected",
        ));
    };
    if input.datatype != "FP32" {
        return Err(ApiError::invalid("inputs[0].datatype", "must be FP32"));
    }
    let n_inputs = model.dbn.n_inputs();
    let rows = match input.shape.as_slice() {
        &[n, d] if n > 0 && n as usize <= state.config.max_batch && d == n_inputs as i64 => {
            n as usize
        }
        _ => {
            return Err(ApiError::invalid(
                "inputs[0].shape",
                format!(
                    "must be [N, {n_inputs}] with 1 <= N <= {}",
                    state.config.max_batch
                ),
            ))
        }
    };
    let mut data = Vec::with_capacity(rows.saturating_mul(n_inputs).min(1 << 24));
    flatten(&input.data, &mut data)?;
    if data.len() != rows * n_inputs {
        return Err(ApiError::invalid(
            "inputs[0].data",
            format!(
                "has {} values; the shape asks for {}",
                data.len(),
                rows * n_inputs
            ),
        ));
    }
    if data.iter().any(|v| !(0.0..=1.0).contains(v)) {
        return Err(ApiError::invalid(
            "inputs[0].data",
            "values must be in [0, 1]",
        ));
    }
    if model.dbn.label_classes() == 0 {
        return Err(ApiError::invalid(
            "model",
            "has no label units and cannot classify",
        ));
    }
    let wanted: Option<Vec<String>> = req.outputs.map(|o| o.into_iter().map(|r| r.name).collect());
    let x = Array2::from_shape_vec((rows, n_inputs), data)
        .map_err(|e| ApiError::internal("input tensor", e))?;
    let probs = state
        .classify(model.clone(), crate::inference::Classifier::FreeEnergy, x)
        .await?;
    let labels: Vec<i64> = argmax_rows(probs.view())
        .into_iter()
        .map(|l| l as i64)
        .collect();
    let mut outputs = vec![
        InferOutput {
            name: "probabilities".into(),
            shape: vec![probs.nrows(), probs.ncols()],
            datatype: "FP32".into(),
            data: serde_json::json!(probs.iter().copied().collect::<Vec<f32>>()),
        },
        InferOutput {
            name: "label".into(),
            shape: vec![labels.len()],
            datatype: "INT64".into(),
            data: serde_json::json!(labels),
        },
    ];
    if let Some(wanted) = wanted {
        if let Some(bad) = wanted
            .iter()
            .find(|w| !outputs.iter().any(|o| &o.name == *w))
        {
            return Err(ApiError::invalid(
                "outputs",
                format!("no output named {bad:?}"),
            ));
        }
        outputs.retain(|o| wanted.contains(&o.name));
    }
    Ok(Json(InferResponse {
        model_name: model.id.clone(),
        model_version: "1".into(),
        id: req.id,
        outputs,
    }))
}
