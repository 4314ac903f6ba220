//! Errors of the numeric engine. Every failure the outside world can cause (bad files,
//! impossible shapes, cancellation) is a value of [`EngineError`], never a panic.

use std::path::PathBuf;

/// Anything the engine can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A data file (IDX) could not be read or is malformed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A model file could not be read, or is corrupt, foreign or of another version.
    #[error("model file: {0}")]
    Model(String),
    /// A training spec or call argument is invalid; `field` names the offending setting.
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    /// Array shapes do not fit the model.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// The observer asked training to stop.
    #[error("training was cancelled")]
    Cancelled,
    /// Training diverged (a weight or statistic became NaN or infinite).
    #[error("training diverged: {0}")]
    Diverged(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl EngineError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        EngineError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Why an IDX file (the MNIST format) was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DataError {
    #[error("{name}: not an IDX file (magic bytes {found:02x?})")]
    BadMagic { name: String, found: Vec<u8> },
    #[error("{name}: IDX element type 0x{code:02x} is not supported (only unsigned bytes, 0x08)")]
    UnsupportedType { name: String, code: u8 },
    #[error("{name}: expected an IDX file of {expected} dimensions, found {found}")]
    Rank {
        name: String,
        expected: usize,
        found: usize,
    },
    #[error(
        "{name}: truncated: the header promises {expected} bytes of data, the file has {found}"
    )]
    Truncated {
        name: String,
        expected: u64,
        found: u64,
    },
    #[error("{name}: {found} bytes after the data the header describes")]
    TrailingBytes { name: String, found: u64 },
    #[error("{name}: decompressed size exceeds the limit of {limit} bytes")]
    TooLarge { name: String, limit: u64 },
    #[error("{name}: gzip stream is corrupt: {message}")]
    Gzip { name: String, message: String },
    #[error(
        "{name}: images are {found_rows}x{found_cols}, expected {expected_rows}x{expected_cols}"
    )]
    ImageSize {
        name: String,
        expected_rows: usize,
        expected_cols: usize,
        found_rows: usize,
        found_cols: usize,
    },
    #[error("{name}: {message}")]
    Invalid { name: String, message: String },
    #[error("{images} images but {labels} labels")]
    CountMismatch { images: usize, labels: usize },
    #[error("{name}: label {label} at index {index} is not below {classes}")]
    LabelRange {
        name: String,
        label: u8,
        index: usize,
        classes: usize,
    },
    #[error("{path}: {message}")]
    Io { path: String, message: String },
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
