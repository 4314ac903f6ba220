//! Images from the outside world: PNG and JPEG decoding with limits on dimensions and memory,
//! and the standard conversion of any picture of a digit to MNIST's form.

mod decode;
mod mnist;

pub use decode::{decode, dimensions, Gray};
pub use mnist::{to_mnist, MNIST_SIDE};

/// Why an image was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    #[error("not a PNG or JPEG image")]
    Unsupported,
    #[error("image of {width}x{height} pixels exceeds the limit of {limit} pixels")]
    TooLarge { width: u64, height: u64, limit: u64 },
    #[error("image could not be decoded: {0}")]
    Corrupt(String),
}
