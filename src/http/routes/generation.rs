//! Generation: digits of a chosen class by Gibbs sampling in the top RBM and a down-pass (JSON
//! or a PNG grid), and the first layer's receptive fields as a picture.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ndarray::Array2;

use crate::http::dto::{ChainFrame, ChainRequest, ChainResponse, SampleRequest, SampleResponse};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{ApiJson, ApiQuery};
use crate::http::state::AppState;
use crate::inference::cost;
use crate::render::{grid_png, Scale};
use crate::store::ModelEntry;

const DEFAULT_SAMPLE_STEPS: usize = 1000;
const DEFAULT_SAMPLE_COUNT: usize = 16;
const DEFAULT_CHAIN_STEPS: usize = 200;
const DEFAULT_CHAIN_FRAMES: usize = 25;
pub const MAX_CHAIN_FRAMES: usize = 200;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/models/{id}/samples", post(samples))
        .route("/v1/models/{id}/samples.png", get(samples_png))
        .route("/v1/models/{id}/chain", post(chain))
        .route("/v1/models/{id}/features.png", get(features_png))
}

struct Generated {
    images: Array2<f32>,
    shape: [usize; 2],
    steps: usize,
    seed: u64,
}

/// Checks a generation request's count, steps and label against the server's limits and
/// the model.
fn check_generation(
    state: &AppState,
    model: &ModelEntry,
    count: usize,
    steps: usize,
    label: Option<usize>,
) -> Result<(), ApiError> {
    if !(1..=state.config.max_samples).contains(&count) {
        return Err(ApiError::invalid(
            "count",
            format!("must be in 1..={}", state.config.max_samples),
        ));
    }
    if steps > state.config.max_gibbs_steps {
        return Err(ApiError::invalid(
            "gibbs_steps",
            format!("must be at most {}", state.config.max_gibbs_steps),
        ));
    }
    let classes = model.dbn.label_classes();
    match label {
        Some(l) if l >= classes => Err(ApiError::invalid(
            "label",
            if classes == 0 {
                "the model has no labels; leave label out".to_string()
            } else {
                format!("must be below {classes}")
            },
        )),
        _ => Ok(()),
    }
}

/// An array's rows as JSON-ready vectors.
pub(super) fn rows(a: &Array2<f32>) -> Vec<Vec<f32>> {
    a.outer_iter().map(|r| r.to_vec()).collect()
}

pub(super) fn image_shape(model: &ModelEntry) -> [usize; 2] {
    model.card.image_shape.unwrap_or([1, model.dbn.n_inputs()])
}

/// A samples request's count and Gibbs steps, defaults filled in.
fn sample_size(req: &SampleRequest) -> (usize, usize) {
    (
        req.count.unwrap_or(DEFAULT_SAMPLE_COUNT),
        req.gibbs_steps.unwrap_or(DEFAULT_SAMPLE_STEPS),
    )
}

/// Checks a samples request and returns the work it asks for.
fn sample_work(state: &AppState, model: &ModelEntry, req: &SampleRequest) -> Result<u64, ApiError> {
    let (count, steps) = sample_size(req);
    check_generation(state, model, count, steps, req.label)?;
    Ok(cost::gibbs(&model.dbn, count, steps))
}

/// Generates the samples of a request checked by [`sample_work`].
fn generate(model: &Arc<ModelEntry>, req: &SampleRequest) -> Result<Generated, ApiError> {
    let (count, steps) = sample_size(req);
    let seed = req.seed.unwrap_or(0);
    let mut rng = crate::engine::rng_from_seed(seed);
    let images = model.dbn.generate(req.label, count, steps, &mut rng)?;
    Ok(Generated {
        images,
        shape: image_shape(model),
        steps,
        seed,
    })
}

impl Generated {
    /// The images as a PNG grid, `req.columns` wide (default up to 10).
    fn png(&self, req: &SampleRequest) -> Result<Response, ApiError> {
        let cols = req
            .columns
            .unwrap_or(10)
            .clamp(1, self.images.nrows().max(1));
        let [h, w] = self.shape;
        Ok(png_response(grid_png(
            self.images.view(),
            h,
            w,
            cols,
            Scale::Unit,
        )?))
    }
}

/// Whether the request's `Accept` header asks for a PNG rather than JSON.
pub(super) fn wants_png(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("image/png"))
}

pub(super) fn png_response(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "image/png")], bytes).into_response()
}

/// Generate digits.
///
/// Gibbs sampling in the top RBM with the label clamped (or free), then one top-down pass to
/// pixel probabilities. JSON by default; a PNG grid with `Accept: image/png`.
#[utoipa::path(post, path = "/v1/models/{id}/samples", tag = "inference",
    params(("id" = String, Path, description = "Model id")),
    request_body = SampleRequest,
    responses(
        (status = 200, description = "Pixel probabilities, or a PNG grid", content(
            (SampleResponse = "application/json"), ("image/png"))),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Count, steps or label out of range; `over_budget`: more work than one call may ask for (DBN_MAX_CALL_WORK)", body = ErrorBody),
        (status = 429, description = "Too many inference calls, or the work of the calls in progress is at DBN_MAX_INFLIGHT_WORK", body = ErrorBody),
    ))]
async fn samples(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<SampleRequest>,
) -> Result<Response, ApiError> {
    let model = state.model(&id).await?;
    let wants_png = wants_png(&headers);
    let work = sample_work(&state, &model, &req)?;
    state
        .infer("samples", work, move || {
            let g = generate(&model, &req)?;
            if wants_png {
                return g.png(&req);
            }
            Ok(Json(SampleResponse {
                model: model.id.clone(),
                label: req.label,
                gibbs_steps: g.steps,
                seed: g.seed,
                shape: g.shape,
                images: rows(&g.images),
            })
            .into_response())
        })
        .await
}

/// Generated digits as a PNG grid, for `<img src>`.
#[utoipa::path(get, path = "/v1/models/{id}/samples.png", tag = "inference",
    params(("id" = String, Path, description = "Model id"), SampleRequest),
    responses(
        (status = 200, description = "A PNG grid", content_type = "image/png", body = Vec<u8>),
        (status = 404, body = ErrorBody),
        (status = 422, description = "Count, steps or label out of range; `over_budget`: more work than one call may ask for (DBN_MAX_CALL_WORK)", body = ErrorBody),
        (status = 429, description = "Too many inference calls, or the work of the calls in progress is at DBN_MAX_INFLIGHT_WORK", body = ErrorBody),
    ))]
async fn samples_png(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(req): ApiQuery<SampleRequest>,
) -> Result<Response, ApiError> {
    let model = state.model(&id).await?;
    let work = sample_work(&state, &model, &req)?;
    state
        .infer("samples", work, move || generate(&model, &req)?.png(&req))
        .await
}

/// Watch chains settle.
///
/// The model's "fantasies" in motion: Gibbs sampling in the top RBM as for samples, with the
/// images after every few steps returned as frames, for an animation.
#[utoipa::path(post, path = "/v1/models/{id}/chain", tag = "inference",
    params(("id" = String, Path, description = "Model id")),
    request_body = ChainRequest,
    responses(
        (status = 200, body = ChainResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 422, description = "Count, steps, frames or label out of range; `over_budget`: more work than one call may ask for (DBN_MAX_CALL_WORK)", body = ErrorBody),
        (status = 429, description = "Too many inference calls, or the work of the calls in progress is at DBN_MAX_INFLIGHT_WORK", body = ErrorBody),
    ))]
async fn chain(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ChainRequest>,
) -> Result<Json<ChainResponse>, ApiError> {
    let model = state.model(&id).await?;
    let count = req.count.unwrap_or(1);
    let steps = req.gibbs_steps.unwrap_or(DEFAULT_CHAIN_STEPS);
    check_generation(&state, &model, count, steps, req.label)?;
    let frames = req.frames.unwrap_or(DEFAULT_CHAIN_FRAMES);
    if !(1..=MAX_CHAIN_FRAMES).contains(&frames) {
        return Err(ApiError::invalid(
            "frames",
            format!("must be in 1..={MAX_CHAIN_FRAMES}"),
        ));
    }
    let work = cost::gibbs(&model.dbn, count, steps)
        .saturating_add(cost::passes(&model.dbn, count.saturating_mul(frames)));
    state
        .infer("chain", work, move || {
            let seed = req.seed.unwrap_or(0);
            let mut rng = crate::engine::rng_from_seed(seed);
            let every = steps.div_ceil(frames).max(1);
            let frames = model
                .dbn
                .generate_frames(req.label, count, steps, every, &mut rng)?;
            Ok(Json(ChainResponse {
                model: model.id.clone(),
                label: req.label,
                seed,
                shape: image_shape(&model),
                frames: frames
                    .into_iter()
                    .map(|(step, images)| ChainFrame {
                        step,
                        images: rows(&images),
                    })
                    .collect(),
            }))
        })
        .await
}

/// Parameters of the features image.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeaturesQuery {
    /// Hidden units to show (default 100, or all of a first layer with fewer).
    pub count: Option<usize>,
}

/// The first layer's receptive fields as an image grid.
///
/// Each tile is the weights from the pixels into one hidden unit, stretched from its
/// smallest (black) to its largest (white) weight.
#[utoipa::path(get, path = "/v1/models/{id}/features.png", tag = "inference",
    params(("id" = String, Path, description = "Model id"), FeaturesQuery),
    responses(
        (status = 200, description = "A PNG grid", content_type = "image/png", body = Vec<u8>),
        (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody),
    ))]
async fn features_png(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<FeaturesQuery>,
) -> Result<Response, ApiError> {
    let model = state.model(&id).await?;
    let hidden = model.dbn.sizes().get(1).copied().unwrap_or(0);
    // Without a count: 100 features, or all of a smaller first layer's.
    let count = q.count.unwrap_or(hidden.min(100));
    if !(1..=hidden).contains(&count) {
        return Err(ApiError::invalid(
            "count",
            format!("must be in 1..={hidden}"),
        ));
    }
    let [h, w] = model
        .card
        .image_shape
        .ok_or_else(|| ApiError::invalid("model", "its inputs are not images"))?;
    let work = cost::passes(&model.dbn, count);
    state
        .infer("features", work, move || {
            let fields = model.dbn.receptive_fields(count);
            let cols = (count as f64).sqrt().ceil() as usize;
            Ok(png_response(grid_png(
                fields.view(),
                h,
                w,
                cols,
                Scale::PerTile,
            )?))
        })
        .await
}
