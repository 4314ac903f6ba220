//! Classification of images (PNG, JPEG, multipart or JSON pixels) by free energy or Gibbs
//! sampling. Free-energy and discriminative classifications are merged with concurrent calls
//! of the same model into one engine batch; Gibbs sampling computes alone.

use axum::extract::{Path, Request, State};
use axum::routing::post;
use axum::{Json, Router};
use ndarray::Axis;

use crate::engine::dbn::argmax_rows;
use crate::http::dto::{ClassifyQuery, ClassifyResponse, Method, PixelsRequest, Prediction};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::ApiQuery;
use crate::http::routes::inputs::{read_body, Body, Inputs};
use crate::http::state::AppState;
use crate::inference::Classifier;
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
        (status = 422, description = "Undecodable image, wrong pixel count, or a model without labels; `over_budget`: more work than one call may ask for (DBN_MAX_CALL_WORK)", body = ErrorBody),
        (status = 429, description = "Too many inference calls, or the work of the calls in progress is at DBN_MAX_INFLIGHT_WORK", body = ErrorBody),
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
    let method = q.method.unwrap_or_else(|| Method::default_for(&model));
    let steps = q.gibbs_steps.unwrap_or(DEFAULT_GIBBS_CLASSIFY_STEPS);
    if method == Method::Gibbs && !(1..=state.config.max_gibbs_steps).contains(&steps) {
        return Err(ApiError::invalid(
            "gibbs_steps",
            format!("must be in 1..={}", state.config.max_gibbs_steps),
        ));
    }
    let seed = q.seed.unwrap_or(0);
    check_can_classify(&model)?;
    let x = inputs.to_matrix(&state, model.dbn.n_inputs()).await?;
    let merged = match method {
        Method::FreeEnergy => Some(Classifier::FreeEnergy),
        Method::Discriminative => Some(Classifier::Discriminative),
        Method::Gibbs => None,
    };
    let probs = match merged {
        Some(how) => state.classify(model.clone(), how, x).await?,
        None => {
            let m = model.clone();
            let work = crate::inference::cost::gibbs(&model.dbn, x.nrows(), steps);
            state
                .infer(method.as_str(), work, move || {
                    let mut rng = crate::engine::rng_from_seed(seed);
                    Ok(m.dbn.classify_gibbs(x.view(), steps, &mut rng)?)
                })
                .await?
        }
    };
    let labels = argmax_rows(probs.view());
    let predictions = probs
        .axis_iter(Axis(0))
        .zip(labels)
        .map(|(p, label)| Prediction {
            label,
            probabilities: p.to_vec(),
        })
        .collect();
    let model_id = model.id.clone();
    Ok(Json(ClassifyResponse {
        model: model_id,
        method,
        predictions,
    }))
}

/// Refuses a model that has neither label units nor a discriminative net.
fn check_can_classify(model: &ModelEntry) -> Result<(), ApiError> {
    if model.dbn.label_classes() == 0 && model.dbn.classifier().is_none() {
        return Err(ApiError::invalid(
            "model",
            "has no label units and cannot classify",
        ));
    }
    Ok(())
}
