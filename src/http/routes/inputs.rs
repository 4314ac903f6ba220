//! Reading the images an inference call works on: one image (`image/png`, `image/jpeg`),
//! several as `multipart/form-data` (one per part), or a JSON body with pixel rows; and
//! turning them into the model's input matrix.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, StatusCode};
use ndarray::Array2;
use serde::de::DeserializeOwned;

use crate::http::error::ApiError;
use crate::http::extract::{body_rejection, ApiJson, BufferedMultipart};
use crate::http::state::AppState;
use crate::imaging::{decode, dimensions, to_mnist, MNIST_SIDE};
use crate::inference::cost;

/// A request body: JSON of the route's own type, or encoded images.
pub enum Body<T> {
    Json(T),
    Images(Vec<Bytes>),
}

/// Reads the body by its content type.
pub async fn read_body<T: DeserializeOwned + 'static>(
    req: Request,
    state: &AppState,
) -> Result<Body<T>, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("application/json") {
        let ApiJson(body) = ApiJson::<T>::from_request(req, state).await?;
        Ok(Body::Json(body))
    } else if content_type.starts_with("multipart/form-data") {
        let BufferedMultipart(mut form) = BufferedMultipart::from_request(req, state).await?;
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
        Ok(Body::Images(images))
    } else if content_type.starts_with("image/") || content_type == "application/octet-stream" {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| body_rejection(r.status(), r.body_text()))?;
        Ok(Body::Images(vec![bytes]))
    } else if content_type.is_empty()
        || content_type.starts_with("application/x-www-form-urlencoded")
    {
        // `curl --data-binary @digit.png` labels the picture a form: a body that begins as a
        // PNG or a JPEG does is taken for the picture it is.
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| body_rejection(r.status(), r.body_text()))?;
        if bytes.starts_with(b"\x89PNG\r\n\x1a\n") || bytes.starts_with(&[0xff, 0xd8, 0xff]) {
            Ok(Body::Images(vec![bytes]))
        } else {
            Err(unsupported_body())
        }
    } else {
        Err(unsupported_body())
    }
}

fn unsupported_body() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "send image/png, image/jpeg, multipart/form-data or application/json",
    )
}

/// The images of a call before decoding.
pub enum Inputs {
    Pixels(Vec<Vec<f32>>),
    Images(Vec<Bytes>),
}

/// Pixel rows up to this many are checked on the async thread; more, and any image, are
/// decoded under an inference slot.
const INLINE_ROWS: usize = 64;

impl Inputs {
    /// [`Inputs::into_matrix`], computed where its cost belongs: small JSON inputs at once,
    /// images and large inputs on the blocking pool under an inference slot (so decoding is
    /// bounded by the same queue and work budget as computing).
    pub async fn to_matrix(
        self,
        state: &AppState,
        n_inputs: usize,
    ) -> Result<Array2<f32>, ApiError> {
        let max_pixels = state.config.max_image_pixels;
        match self {
            Inputs::Pixels(rows) if rows.len() <= INLINE_ROWS => {
                Inputs::Pixels(rows).into_matrix(n_inputs, max_pixels)
            }
            inputs => {
                let work = inputs.work(max_pixels)?;
                state
                    .infer("decode", work, move || {
                        inputs.into_matrix(n_inputs, max_pixels)
                    })
                    .await
            }
        }
    }

    /// The work of reading the inputs, known before any is decoded: the pixels every image
    /// declares in its header, summed over the images. An image over the size limit, or
    /// whose header cannot be read, is refused here.
    pub fn work(&self, max_pixels: u64) -> Result<u64, ApiError> {
        match self {
            Inputs::Pixels(rows) => Ok(rows.iter().map(|r| r.len() as u64).sum()),
            Inputs::Images(images) => {
                let mut pixels: u64 = 0;
                for bytes in images {
                    let (width, height) = dimensions(bytes, max_pixels)?;
                    pixels = pixels.saturating_add(width * height);
                }
                Ok(cost::decoding(pixels))
            }
        }
    }

    /// [`Inputs::work`] and one pass of every image through `dbn`.
    pub fn work_through(
        &self,
        dbn: &crate::engine::dbn::Dbn,
        max_pixels: u64,
    ) -> Result<u64, ApiError> {
        Ok(self
            .work(max_pixels)?
            .saturating_add(cost::passes(dbn, self.len())))
    }

    /// How many images.
    pub fn len(&self) -> usize {
        match self {
            Inputs::Pixels(rows) => rows.len(),
            Inputs::Images(images) => images.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses more than `max` images in one call.
    pub fn check_count(&self, max: usize) -> Result<(), ApiError> {
        let count = self.len();
        if count > max {
            return Err(ApiError::invalid(
                "pixels",
                format!("{count} images in one call; at most {max} are taken"),
            ));
        }
        Ok(())
    }

    /// The input matrix [n, n_inputs]: pixel rows checked for width and range, or images
    /// decoded and brought to MNIST's form (greyscale, inverted, cropped to the ink, scaled
    /// so the longer side is 20 px, centred by centre of mass in 28×28).
    pub fn into_matrix(self, n_inputs: usize, max_pixels: u64) -> Result<Array2<f32>, ApiError> {
        let rows: Vec<Vec<f32>> = match self {
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
                // Between images, a call nobody waits for any more stops decoding.
                let mut rows = Vec::with_capacity(images.len());
                for bytes in &images {
                    crate::engine::cancel::check()?;
                    rows.push(to_mnist(&decode(bytes, max_pixels)?));
                }
                rows
            }
        };
        if rows.is_empty() {
            return Err(ApiError::invalid("pixels", "no images given"));
        }
        let flat: Vec<f32> = rows.concat();
        Array2::from_shape_vec((flat.len() / n_inputs, n_inputs), flat)
            .map_err(|e| ApiError::internal("input matrix", e))
    }
}
