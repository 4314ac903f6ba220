//! The IDX format of the MNIST files: a big-endian magic `0x0000TTDD` (TT = element type,
//! DD = number of dimensions), DD big-endian u32 sizes, then the elements. Files may be
//! gzipped; gzip is recognised by its magic bytes, not by the file name.

use std::io::Read;
use std::path::Path;

use flate2::read::MultiGzDecoder;

use crate::engine::error::DataError;

/// The element type code of unsigned bytes, the only one MNIST uses.
const TYPE_U8: u8 = 0x08;
pub(super) const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Refuse to inflate more than this by default (the MNIST training images are 47 MB).
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;

/// An IDX array of unsigned bytes: its dimensions and its elements in row-major order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

impl IdxArray {
    /// Keeps the first `n` entries along the first dimension (all of them when there are no
    /// more than `n`).
    pub fn truncate_rows(&mut self, n: usize) {
        if self.dims.is_empty() || n >= self.dims[0] {
            return;
        }
        let per_row: usize = self.dims[1..].iter().product();
        self.data.truncate(n * per_row);
        self.dims[0] = n;
    }
}

/// Parses IDX bytes (raw or gzipped) into an array, checking that the data length matches
/// the header exactly. `name` labels errors; `max_bytes` bounds the decompressed size.
pub fn parse_idx(name: &str, bytes: &[u8], max_bytes: u64) -> Result<IdxArray, DataError> {
    if bytes.starts_with(&GZIP_MAGIC) {
        let mut raw = Vec::new();
        MultiGzDecoder::new(bytes)
            .take(max_bytes + 1)
            .read_to_end(&mut raw)
            .map_err(|e| DataError::Gzip {
                name: name.to_string(),
                message: e.to_string(),
            })?;
        if raw.len() as u64 > max_bytes {
            return Err(DataError::TooLarge {
                name: name.to_string(),
                limit: max_bytes,
            });
        }
        return parse_raw(name, &raw);
    }
    parse_raw(name, bytes)
}

fn parse_raw(name: &str, bytes: &[u8]) -> Result<IdxArray, DataError> {
    let (dims, header) = parse_header(name, bytes)?;
    let count = element_count(&dims);
    let body = (bytes.len() - header) as u64;
    if body < count {
        return Err(DataError::Truncated {
            name: name.to_string(),
            expected: count,
            found: body,
        });
    }
    if body > count {
        return Err(DataError::TrailingBytes {
            name: name.to_string(),
            found: body - count,
        });
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// The header at the start of `bytes` (the whole file, or as much of its beginning as holds
/// the header): the dimensions, and the header's length in bytes.
pub(super) fn parse_header(name: &str, bytes: &[u8]) -> Result<(Vec<usize>, usize), DataError> {
    let truncated = |expected: u64| DataError::Truncated {
        name: name.to_string(),
        expected,
        found: bytes.len() as u64,
    };
    if bytes.len() < 4 {
        return Err(if bytes.is_empty() || bytes[0] == 0 {
            truncated(4)
        } else {
            DataError::BadMagic {
                name: name.to_string(),
                found: bytes.to_vec(),
            }
        });
    }
    if bytes[0] != 0 || bytes[1] != 0 || bytes[3] == 0 {
        return Err(DataError::BadMagic {
            name: name.to_string(),
            found: bytes[..4].to_vec(),
        });
    }
    if bytes[2] != TYPE_U8 {
        return Err(DataError::UnsupportedType {
            name: name.to_string(),
            code: bytes[2],
        });
    }
    let header = 4 + 4 * bytes[3] as usize;
    if bytes.len() < header {
        return Err(truncated(header as u64));
    }
    let dims = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    Ok((dims, header))
}

/// The number of elements `dims` declare. A product of up to 255 u32 sizes can overflow u64:
/// it saturates, so an absurd header reads as truncated.
pub(super) fn element_count(dims: &[usize]) -> u64 {
    dims.iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .unwrap_or(u64::MAX)
}

/// Reads and parses an IDX file (raw or gzipped).
pub fn read_idx_file(path: &Path) -> Result<IdxArray, DataError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| DataError::Io {
        path: name.clone(),
        message: e.to_string(),
    })?;
    parse_idx(&name, &bytes, DEFAULT_MAX_BYTES)
}

/// Encodes an array as raw IDX bytes (the inverse of [`parse_idx`]); used to write fixtures
/// and test cases.
pub fn encode_idx(array: &IdxArray) -> Vec<u8> {
    let mut out = vec![0, 0, TYPE_U8, array.dims.len() as u8];
    for &d in &array.dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(&array.data);
    out
}
