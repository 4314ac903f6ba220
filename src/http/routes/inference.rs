//! Using a model: classify images (PNG, JPEG, multipart or JSON pixels), generate digits
//! (JSON or a PNG grid) and show the first layer's features. All computation runs on the
//! blocking pool under the inference limit.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ndarray::{Array2, Axis};

use crate::engine::dbn::argmax_rows;
use crate::http::dto::{
    ClassifyQuery, ClassifyResponse, Method, PixelsRequest, Prediction, SampleRequest,
    SampleResponse,
};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{body_rejection, ApiJson, ApiQuery};
use crate::http::state::AppState;
use crate::imaging::{decode, to_mnist, MNIST_SIDE};
use crate::render::{grid_png, Scale};
use crate::store::ModelEntry;

const DEFAULT_GIBBS_CLASSIFY_STEPS: usize = 200;
const DEFAULT_SAMPLE_STEPS: usize = 1000;
const DEFAULT_SAMPLE_COUNT: usize = 16;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/models/{id}/classify", post(classify))
        .route("/v1/models/{id}/samples", post(samples))
        .route("/v1/models/{id}/samples.png", get(samples_png))
        .route("/v1/models/{id}/features.png", get(features_png))
}

/// The inputs of a classification before decoding.
enum Inputs {
    Pixels(Vec<Vec<f32>>),
    Images(Vec<Bytes>),
}

/// Classify one or more images.
///
/// The body is one image (`image/png`, `image/jpeg`), several images as
/// `multipart/form-data` (one image per part), or JSON pixels. Images of any size and colour
/// are brought to MNIST's form: greyscale, dark-on-light inverted, cropped to the ink, scaled
/// so the longer side is 20 px, centred by centre of mass in 28×28.
#[utoipa::path(post, path = "/v1/models/{id}/classify", tag = "inference",
    params(("id" = String, Path, description = "Model id"), ClassifyQuery),
    request_body(content(
        (PixelsRequest = "application/json"),
        ("image/png"), ("image/jpeg"), ("multipart/form-data"),
    )),
    responses(
        (status = 200, body = ClassifyResponse),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 413, description = "Body or image too large", body = ErrorBody),
        (status = 415, description = "Not an image or JSON", body = ErrorBody),
        (status = 422, description = "Undecodable image, wrong pixel count, or a model without labels", body = ErrorBody),
        (status = 429, description = "Too many inference calls", body = ErrorBody),
    ))]
async fn classify(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(mut q): ApiQuery<ClassifyQuery>,
    req: Request,
) -> Result<Json<ClassifyResponse>, ApiError> {
    let model = state.models.get(&id)?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let inputs = if content_type.starts_with("application/json") {
        let ApiJson(body) = ApiJson::<PixelsRequest>::from_request(req, &state).await?;
        q.method = body.method.or(q.method);
        q.gibbs_steps = body.gibbs_steps.or(q.gibbs_steps);
        q.seed = body.seed.or(q.seed);
        Inputs::Pixels(body.pixels)
    } else if content_type.starts_with("multipart/form-data") {
        let mut form = Multipart::from_request(req, &state)
            .await
            .map_err(|r| body_rejection(r.status(), r.body_text()))?;
        let mut images = Vec::new();
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|r| body_rejection(r.status(), r.body_text()))?
        {
            images.push(
                field
                    .bytes()
                    .await
                    .map_err(|r| body_rejection(r.status(), r.body_text()))?,
            );
        }
        Inputs::Images(images)
    } else if content_type.starts_with("image/") || content_type == "application/octet-stream" {
        let bytes = Bytes::from_request(req, &state)
            .await
            .map_err(|r| body_rejection(r.status(), r.body_text()))?;
        Inputs::Images(vec![bytes])
    } else {
        return Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send image/png, image/jpeg, multipart/form-data or application/json",
        ));
    };
    let method = q.method.unwrap_or_default();
    let steps = q.gibbs_steps.unwrap_or(DEFAULT_GIBBS_CLASSIFY_STEPS);
    if method == Method::Gibbs && !(1..=state.config.max_gibbs_steps).contains(&steps) {
        return Err(ApiError::invalid(
            "gibbs_steps",
            format!("must be in 1..={}", state.config.max_gibbs_steps),
        ));
    }
    let seed = q.seed.unwrap_or(0);
    let max_pixels = state.config.max_image_pixels;
    let model_id = model.id.clone();
    let predictions = state
        .infer(method.as_str(), move || {
            let x = to_matrix(&model, inputs, max_pixels)?;
            let probs = match method {
                Method::FreeEnergy => model.dbn.classify_free_energy(x.view())?,
                Method::Gibbs => {
                    let mut rng = crate::engine::rng_from_seed(seed);
                    model.dbn.classify_gibbs(x.view(), steps, &mut rng)?
                }
            };
            let labels = argmax_rows(probs.view());
            Ok(probs
                .axis_iter(Axis(0))
                .zip(labels)
                .map(|(p, label)| Prediction {
                    label,
                    probabilities: p.to_vec(),
                })
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(Json(ClassifyResponse {
        model: model_id,
        method,
        predictions,
    }))
}

/// The model's input matrix [n, n_inputs] from pixels or images.
fn to_matrix(model: &ModelEntry, inputs: Inputs, max_pixels: u64) -> Result<Array2<f32>, ApiError> {
    if model.dbn.label_classes() == 0 {
        return Err(ApiError::invalid(
            "model",
            "has no label units and cannot classify",
        ));
    }
    let n_inputs = model.dbn.n_inputs();
    let rows: Vec<Vec<f32>> = match inputs {
        Inputs::Pixels(rows) => {
            for (i, row) in rows.iter().enumerate() {
                if row.len() != n_inputs {
                    return Err(ApiError::invalid(
                        &format!("pixels[{i}]"),
                        format!("has {} values; the model takes {n_inputs}", row.len()),
                    ));
                }
                if let Some(v) = row.iter().find(|v| !(0.0..=1.0).contains(*v)) {
                    return Err(ApiError::invalid(
                        &format!("pixels[{i}]"),
                        format!("value {v} is outside [0, 1]"),
                    ));
                }
            }
            rows
        }
        Inputs::Images(images) => {
            if n_inputs != MNIST_SIDE * MNIST_SIDE {
                return Err(ApiError::invalid(
                    "model",
                    format!("takes {n_inputs} inputs, not 28x28 images; send JSON pixels"),
                ));
            }
            images
                .iter()
                .map(|b| decode(b, max_pixels).map(|g| to_mnist(&g)))
                .collect::<Result<_, _>>()?
        }
    };
    if rows.is_empty() {
        return Err(ApiError::invalid("pixels", "no images given"));
    }
    let flat: Vec<f32> = rows.concat();
    Array2::from_shape_vec((flat.len() / n_inputs, n_inputs), flat)
        .map_err(|e| ApiError::internal("input matrix", e))
}

struct Generated {
    images: Array2<f32>,
    shape: [usize; 2],
    steps: usize,
    seed: u64,
}

fn generate(
    state: &AppState,
    model: &Arc<ModelEntry>,
    req: &SampleRequest,
) -> Result<Generated, ApiError> {
    let count = req.count.unwrap_or(DEFAULT_SAMPLE_COUNT);
    if !(1..=state.config.max_samples).contains(&count) {
        return Err(ApiError::invalid(
            "count",
            format!("must be in 1..={}", state.config.max_samples),
        ));
    }
    let steps = req.gibbs_steps.unwrap_or(DEFAULT_SAMPLE_STEPS);
    if steps > state.config.max_gibbs_steps {
        return Err(ApiError::invalid(
            "gibbs_steps",
            format!("must be at most {}", state.config.max_gibbs_steps),
        ));
    }
    let classes = model.dbn.label_classes();
    if let Some(l) = req.label {
        if l >= classes {
            return Err(ApiError::invalid(
                "label",
                if classes == 0 {
                    "the model has no labels; leave label out".to_string()
                } else {
                    format!("must be below {classes}")
                },
            ));
        }
    }
    let shape = model.card.image_shape.unwrap_or([1, model.dbn.n_inputs()]);
    let seed = req.seed.unwrap_or(0);
    let mut rng = crate::engine::rng_from_seed(seed);
    let images = model.dbn.generate(req.label, count, steps, &mut rng)?;
    Ok(Generated {
        images,
        shape,
        steps,
        seed,
    })
}

fn png_response(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "image/png")], bytes).into_response()
}

fn columns(req: &SampleRequest, n: usize) -> usize {
    req.columns.unwrap_or(10).clamp(1, n.max(1))
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
        (status = 404, body = ErrorBody),
        (status = 422, description = "Count, steps or label out of range", body = ErrorBody),
        (status = 429, body = ErrorBody),
    ))]
async fn samples(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<SampleRequest>,
) -> Result<Response, ApiError> {
    let model = state.models.get(&id)?;
    let wants_png = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("image/png"));
    let s = state.clone();
    state
        .infer("samples", move || {
            let g = generate(&s, &model, &req)?;
            if wants_png {
                let cols = columns(&req, g.images.nrows());
                return Ok(png_response(grid_png(
                    g.images.view(),
                    g.shape[0],
                    g.shape[1],
                    cols,
                    Scale::Unit,
                )?));
            }
            Ok(Json(SampleResponse {
                model: model.id.clone(),
                label: req.label,
                gibbs_steps: g.steps,
                seed: g.seed,
                shape: g.shape,
                images: g.images.outer_iter().map(|r| r.to_vec()).collect(),
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
        (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody),
    ))]
async fn samples_png(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiQuery(req): ApiQuery<SampleRequest>,
) -> Result<Response, ApiError> {
    let model = state.models.get(&id)?;
    let s = state.clone();
    state
        .infer("samples", move || {
            let g = generate(&s, &model, &req)?;
            let cols = columns(&req, g.images.nrows());
            Ok(png_response(grid_png(
                g.images.view(),
                g.shape[0],
                g.shape[1],
                cols,
                Scale::Unit,
            )?))
        })
        .await
}

/// Parameters of the features image.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeaturesQuery {
    /// Hidden units to show (default 100).
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
    let model = state.models.get(&id)?;
    let count = q.count.unwrap_or(100);
    let hidden = model.dbn.sizes().get(1).copied().unwrap_or(0);
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
    state
        .infer("features", move || {
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
