//! Codes and reconstructions: what a model makes of an image at its top, and the image it
//! rebuilds from that (the deep autoencoder's encoder and decoder, or any DBN's up- and
//! down-pass).

use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use ndarray::{Array2, Axis};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::generation::{image_shape, png_response, rows, wants_png};
use crate::http::error::{ApiError, ErrorBody};
use crate::http::routes::inputs::{read_body, Body, Inputs};
use crate::http::state::AppState;
use crate::render::{grid_png, Scale};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/models/{id}/encode", post(encode))
        .route("/v1/models/{id}/reconstruct", post(reconstruct))
}

/// Images as pixel intensities.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodesRequest {
    /// One row of the model's input size (784 for 28×28) per image, values in [0, 1].
    pub pixels: Vec<Vec<f32>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EncodeResponse {
    pub model: String,
    /// Values per code.
    pub code_size: usize,
    /// One code per image: the deep autoencoder's code layer, or the top RBM's hidden
    /// probabilities (the features joined to the labels, for a top RBM with label units).
    pub codes: Vec<Vec<f32>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReconstructResponse {
    pub model: String,
    /// Height and width of each image.
    pub shape: [usize; 2],
    /// One reconstruction per image, pixel intensities in [0, 1].
    pub reconstructions: Vec<Vec<f32>>,
    /// Σ (x − x̂)² over the pixels of each image.
    pub squared_errors: Vec<f64>,
}

async fn inputs(req: Request, state: &AppState) -> Result<Inputs, ApiError> {
    let inputs = match read_body::<CodesRequest>(req, state).await? {
        Body::Json(body) => Inputs::Pixels(body.pixels),
        Body::Images(images) => Inputs::Images(images),
    };
    inputs.check_count(state.config.max_batch)?;
    Ok(inputs)
}

/// Encode images.
///
/// The code of each image at the top of the model. The body is one image, several as
/// `multipart/form-data`, or JSON pixels, as for classification.
#[utoipa::path(post, path = "/v1/models/{id}/encode", tag = "inference",
    params(("id" = String, Path, description = "Model id")),
    request_body(content(
        (CodesRequest = "application/json"),
        ("image/png"), ("image/jpeg"), ("multipart/form-data"),
    )),
    responses(
        (status = 200, body = EncodeResponse),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 413, description = "Body or image too large", body = ErrorBody),
        (status = 415, description = "Not an image or JSON", body = ErrorBody),
        (status = 422, description = "Undecodable image, wrong pixel count or unknown field; `over_budget`: more work than one call may ask for (DBN_MAX_CALL_WORK)", body = ErrorBody),
        (status = 429, description = "Too many inference calls, or the work of the calls in progress is at DBN_MAX_INFLIGHT_WORK", body = ErrorBody),
    ))]
async fn encode(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Json<EncodeResponse>, ApiError> {
    let model = state.model(&id).await?;
    let inputs = inputs(req, &state).await?;
    let max_pixels = state.config.max_image_pixels;
    let work = inputs.work_through(&model.dbn, max_pixels)?;
    state
        .infer("encode", work, move || {
            let x = inputs.into_matrix(model.dbn.n_inputs(), max_pixels)?;
            let codes = model.dbn.encode(x.view())?;
            Ok(Json(EncodeResponse {
                model: model.id.clone(),
                code_size: codes.ncols(),
                codes: rows(&codes),
            }))
        })
        .await
}

/// Reconstruct images.
///
/// Each image rebuilt from its code: JSON by default; with `Accept: image/png`, a PNG grid
/// of (input, reconstruction) pairs side by side, up to five pairs a row.
#[utoipa::path(post, path = "/v1/models/{id}/reconstruct", tag = "inference",
    params(("id" = String, Path, description = "Model id")),
    request_body(content(
        (CodesRequest = "application/json"),
        ("image/png"), ("image/jpeg"), ("multipart/form-data"),
    )),
    responses(
        (status = 200, description = "Reconstructions, or a PNG grid", content(
            (ReconstructResponse = "application/json"), ("image/png"))),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 413, description = "Body or image too large", body = ErrorBody),
        (status = 415, description = "Not an image or JSON", body = ErrorBody),
        (status = 422, description = "Undecodable image, wrong pixel count or unknown field; `over_budget`: more work than one call may ask for (DBN_MAX_CALL_WORK)", body = ErrorBody),
        (status = 429, description = "Too many inference calls, or the work of the calls in progress is at DBN_MAX_INFLIGHT_WORK", body = ErrorBody),
    ))]
async fn reconstruct(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let model = state.model(&id).await?;
    let wants_png = wants_png(req.headers());
    let inputs = inputs(req, &state).await?;
    let max_pixels = state.config.max_image_pixels;
    let work = inputs.work_through(&model.dbn, max_pixels)?;
    state
        .infer("reconstruct", work, move || {
            let x = inputs.into_matrix(model.dbn.n_inputs(), max_pixels)?;
            let recon = model.dbn.reconstruct(x.view())?;
            let shape = image_shape(&model);
            if wants_png {
                return pairs_png(&x, &recon, shape);
            }
            let squared_errors = x
                .axis_iter(Axis(0))
                .zip(recon.axis_iter(Axis(0)))
                .map(|(a, b)| {
                    a.iter()
                        .zip(b.iter())
                        .map(|(&p, &q)| ((p - q) as f64).powi(2))
                        .sum()
                })
                .collect();
            Ok(Json(ReconstructResponse {
                model: model.id.clone(),
                shape,
                reconstructions: rows(&recon),
                squared_errors,
            })
            .into_response())
        })
        .await
}

/// Inputs and reconstructions interleaved, so each pair sits side by side in the grid.
fn pairs_png(
    x: &Array2<f32>,
    recon: &Array2<f32>,
    [h, w]: [usize; 2],
) -> Result<Response, ApiError> {
    let mut both = Array2::zeros((2 * x.nrows(), x.ncols()));
    for (i, (a, b)) in x
        .axis_iter(Axis(0))
        .zip(recon.axis_iter(Axis(0)))
        .enumerate()
    {
        both.row_mut(2 * i).assign(&a);
        both.row_mut(2 * i + 1).assign(&b);
    }
    let cols = 2 * x.nrows().min(5);
    Ok(png_response(grid_png(
        both.view(),
        h,
        w,
        cols,
        Scale::Unit,
    )?))
}
