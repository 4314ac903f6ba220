//! Classification of images (PNG, JPEG, multipart or JSON pixels) by free energy or Gibbs
//! sampling. The computation runs on the blocking pool under the inference limit.

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::header;
use axum::routing::post;
use axum::{Json, Router};
use ndarray::{Array2, Axis};

use crate::engine::dbn::argmax_rows;
use crate::http::dto::{ClassifyQuery, ClassifyResponse, Method, PixelsRequest, Prediction};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{body_rejection, ApiJson, ApiQuery, BufferedMultipart};
use crate::http::state::AppState;
use crate::imaging::{decode, to_mnist, MNIST_SIDE};
use crate::store::ModelEntry;

const DEFAULT_GIBBS_CLASSIFY_STEPS: usize = 200;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/models/{id}/classify", post(classify))
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
        let BufferedMultipart(mut form) = BufferedMultipart::from_request(req, &state).await?;
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
    let count = match &inputs {
        Inputs::Pixels(rows) => rows.len(),
        Inputs::Images(images) => images.len(),
    };
    if count > state.config.max_batch {
        return Err(ApiError::invalid(
            "pixels",
            format!(
                "{count} images in one call; at most {} are taken",
                state.config.max_batch
            ),
        ));
    }
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
                Method::Discriminative => model.dbn.classify_discriminative(x.view())?,
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
    if model.dbn.label_classes() == 0 && model.dbn.classifier().is_none() {
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
