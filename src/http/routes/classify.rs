//! Classification of images (PNG, JPEG, multipart or JSON pixels) by free energy or Gibbs
//! sampling. The computation runs on the blocking pool under the inference limit.

use axum::extract::{Path, Request, State};
use axum::routing::post;
use axum::{Json, Router};
use ndarray::{Array2, Axis};

use crate::engine::dbn::argmax_rows;
use crate::http::dto::{ClassifyQuery, ClassifyResponse, Method, PixelsRequest, Prediction};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::ApiQuery;
use crate::http::routes::inputs::{read_body, Body, Inputs};
use crate::http::state::AppState;
use crate::store::ModelEntry;

const DEFAULT_GIBBS_CLASSIFY_STEPS: usize = 200;

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/models/{id}/classify", post(classify))
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
    let model = state.model(&id).await?;
    let inputs = match read_body::<PixelsRequest>(req, &state).await? {
        Body::Json(body) => {
            q.method = body.method.or(q.method);
            q.gibbs_steps = body.gibbs_steps.or(q.gibbs_steps);
            q.seed = body.seed.or(q.seed);
            Inputs::Pixels(body.pixels)
        }
        Body::Images(images) => Inputs::Images(images),
    };
    inputs.check_count(state.config.max_batch)?;
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

/// The model's input matrix, for a model that can classify.
fn to_matrix(model: &ModelEntry, inputs: Inputs, max_pixels: u64) -> Result<Array2<f32>, ApiError> {
    if model.dbn.label_classes() == 0 && model.dbn.classifier().is_none() {
        return Err(ApiError::invalid(
            "model",
            "has no label units and cannot classify",
        ));
    }
    inputs.into_matrix(model.dbn.n_inputs(), max_pixels)
}
