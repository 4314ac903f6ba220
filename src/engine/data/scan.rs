//! Checking IDX files without unpacking them into memory: the header is parsed and the
//! elements are read through (a gzip decoder when the file is gzipped) in small pieces, so
//! a file that unpacks to a gigabyte costs a few kilobytes to check. Used for uploads, whose
//! bytes are stored as they came once they pass.
//!
//! The checks and their errors are those of [`super::idx::parse_idx`] (whose header parser it
//! shares) and
//! [`super::Dataset::from_idx`]; the reading stops early when the computation is cancelled
//! (see [`crate::engine::cancel`]).

use std::io::Read;

use flate2::read::MultiGzDecoder;

use super::idx::{element_count, parse_header, GZIP_MAGIC};
use crate::engine::error::{DataError, Result};

/// Elements read per piece.
const PIECE: usize = 64 << 10;
/// Pieces between looks at the cancel flag.
const PIECES_PER_CHECK: usize = 16;

/// What a pair of image and label files holds, once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedPair {
    /// Examples (images, and as many labels).
    pub examples: usize,
    /// Bytes of the images once unpacked (elements only).
    pub unpacked_bytes: u64,
}

/// Checks an image file and a label file as [`super::Dataset::from_idx`] would load them:
/// images of `shape`, as many labels, each below `classes`; neither file may unpack to
/// more than `max_bytes`.
pub fn check_pair(
    images: &[u8],
    labels: &[u8],
    names: (&str, &str),
    shape: (usize, usize),
    classes: usize,
    max_bytes: u64,
) -> Result<CheckedPair> {
    let (images_name, labels_name) = names;
    let mut image_reader = open(images);
    let dims = header(images_name, &mut image_reader, 3)?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    if (rows, cols) != shape {
        return Err(DataError::ImageSize {
            name: images_name.into(),
            expected_rows: shape.0,
            expected_cols: shape.1,
            found_rows: rows,
            found_cols: cols,
        }
        .into());
    }
    let image_bytes = element_count(&dims);
    body(images_name, &mut image_reader, &dims, max_bytes, |_, _| {
        Ok(())
    })?;

    let mut label_reader = open(labels);
    let label_dims = header(labels_name, &mut label_reader, 1)?;
    if label_dims[0] != n {
        return Err(DataError::CountMismatch {
            images: n,
            labels: label_dims[0],
        }
        .into());
    }
    body(
        labels_name,
        &mut label_reader,
        &label_dims,
        max_bytes,
        |offset, piece| match piece.iter().position(|&l| l as usize >= classes) {
            Some(i) => Err(DataError::LabelRange {
                name: labels_name.into(),
                label: piece[i],
                index: offset + i,
                classes,
            }),
            None => Ok(()),
        },
    )?;
    Ok(CheckedPair {
        examples: n,
        unpacked_bytes: image_bytes,
    })
}

/// The file's bytes as they unpack: through gzip when they begin as gzip does.
fn open(bytes: &[u8]) -> Box<dyn Read + '_> {
    if bytes.starts_with(&GZIP_MAGIC) {
        Box::new(MultiGzDecoder::new(bytes))
    } else {
        Box::new(bytes)
    }
}

fn gzip_error(name: &str, e: std::io::Error) -> DataError {
    DataError::Gzip {
        name: name.to_string(),
        message: e.to_string(),
    }
}

/// Reads up to `buf.len()` bytes; fewer only at the end of the stream.
fn fill(name: &str, r: &mut dyn Read, buf: &mut [u8]) -> std::result::Result<usize, DataError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(gzip_error(name, e)),
        }
    }
    Ok(got)
}

/// Reads and parses the header (as [`parse_header`] does for a whole file), which must
/// declare `rank` dimensions.
fn header(name: &str, r: &mut dyn Read, rank: usize) -> Result<Vec<usize>> {
    let mut head = vec![0u8; 4];
    let got = fill(name, r, &mut head)?;
    head.truncate(got);
    if got == 4 {
        // The magic's last byte is the number of dimensions, four bytes each.
        head.resize(4 + 4 * head[3] as usize, 0);
        let more = fill(name, r, &mut head[4..])?;
        head.truncate(4 + more);
    }
    let (dims, _) = parse_header(name, &head)?;
    if dims.len() != rank {
        return Err(DataError::Rank {
            name: name.into(),
            expected: rank,
            found: dims.len(),
        }
        .into());
    }
    Ok(dims)
}

/// Reads exactly the elements `dims` declare, giving each piece and its offset to `visit`;
/// fewer is truncated, more is trailing bytes, more than `max_bytes` is too large.
fn body(
    name: &str,
    r: &mut dyn Read,
    dims: &[usize],
    max_bytes: u64,
    mut visit: impl FnMut(usize, &[u8]) -> std::result::Result<(), DataError>,
) -> Result<()> {
    let expected = element_count(dims);
    if expected > max_bytes {
        return Err(DataError::TooLarge {
            name: name.into(),
            limit: max_bytes,
        }
        .into());
    }
    let mut buf = vec![0u8; PIECE];
    let mut read: u64 = 0;
    let mut pieces = 0usize;
    while read < expected {
        let want = (expected - read).min(PIECE as u64) as usize;
        let got = fill(name, r, &mut buf[..want])?;
        if got == 0 {
            break;
        }
        visit(read as usize, &buf[..got])?;
        read += got as u64;
        pieces += 1;
        if pieces.is_multiple_of(PIECES_PER_CHECK) {
            crate::engine::cancel::check()?;
        }
    }
    if read < expected {
        return Err(DataError::Truncated {
            name: name.into(),
            expected,
            found: read,
        }
        .into());
    }
    // Anything after the declared elements, up to a piece's worth, is counted for the message.
    let extra = fill(name, r, &mut buf)?;
    if extra > 0 {
        return Err(DataError::TrailingBytes {
            name: name.into(),
            found: extra as u64,
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::data::idx::{encode_idx, IdxArray};
    use crate::engine::error::EngineError;
    use std::io::Write;

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn pair(n: usize, side: usize, labels: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
        let images = encode_idx(&IdxArray {
            dims: vec![n, side, side],
            data: (0..n * side * side).map(|i| (i % 251) as u8).collect(),
        });
        let labels = encode_idx(&IdxArray {
            dims: vec![labels.len()],
            data: labels,
        });
        (images, labels)
    }

    fn check(images: &[u8], labels: &[u8]) -> Result<CheckedPair> {
        check_pair(images, labels, ("images", "labels"), (28, 28), 10, 1 << 30)
    }

    /// The oracle: the in-memory parser and loader, on the same bytes.
    fn loaded(images: &[u8], labels: &[u8]) -> std::result::Result<usize, String> {
        let images = crate::engine::data::parse_idx("images", images, 1 << 30);
        let labels = crate::engine::data::parse_idx("labels", labels, 1 << 30);
        match (images, labels) {
            (Ok(i), Ok(l)) => crate::engine::data::Dataset::from_idx(&i, &l, Some((28, 28)), 10)
                .map(|d| d.len())
                .map_err(|e| e.to_string()),
            (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
        }
    }

    #[test]
    fn a_scan_accepts_and_refuses_what_loading_does() {
        let (images, labels) = pair(300, 28, (0..300).map(|i| (i % 10) as u8).collect());
        let ok = check(&images, &labels).unwrap();
        assert_eq!(ok.examples, 300);
        assert_eq!(ok.unpacked_bytes, 300 * 784);
        assert_eq!(check(&gz(&images), &gz(&labels)).unwrap(), ok);
        assert_eq!(loaded(&images, &labels), Ok(300));

        let mut bad_label = (0..300).map(|i| (i % 10) as u8).collect::<Vec<_>>();
        bad_label[123] = 10;
        let (_, labels_10) = pair(300, 28, bad_label);
        let (small, small_labels) = pair(5, 20, vec![0; 5]);
        let mut trailing = images.clone();
        trailing.extend_from_slice(&[1, 2, 3]);
        let cases: Vec<(&str, Vec<u8>, Vec<u8>, &str)> = vec![
            ("label 10", images.clone(), labels_10, "label 10"),
            (
                "truncated",
                images[..images.len() - 5].to_vec(),
                labels.clone(),
                "images",
            ),
            ("trailing", trailing, labels.clone(), "3"),
            ("shape", small, small_labels, "20x20"),
            (
                "count",
                images.clone(),
                pair(299, 28, vec![0; 299]).1,
                "299",
            ),
            (
                "magic",
                b"\x01\x02\x03\x04rest".to_vec(),
                labels.clone(),
                "not an IDX",
            ),
            ("empty", Vec::new(), labels.clone(), "images"),
            ("rank", labels.clone(), labels.clone(), "dimensions"),
            ("gzip", gz(&images)[..40].to_vec(), labels.clone(), "gzip"),
        ];
        for (what, images, labels, needle) in cases {
            let scanned = check(&images, &labels).unwrap_err().to_string();
            assert!(scanned.contains(needle), "{what}: {scanned}");
            assert!(
                loaded(&images, &labels).is_err(),
                "{what}: the loader agrees"
            );
        }
    }

    #[test]
    fn a_file_that_unpacks_past_the_limit_is_refused_before_reading_it() {
        // 1.1 million blank images: 862 MB unpacked, under a megabyte gzipped.
        let n = 1_100_000usize;
        let mut header = vec![0, 0, 8, 3];
        for d in [n, 28, 28] {
            header.extend_from_slice(&(d as u32).to_be_bytes());
        }
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&header).unwrap();
        let zeros = vec![0u8; 1 << 20];
        let mut left = n * 784;
        while left > 0 {
            let k = left.min(zeros.len());
            e.write_all(&zeros[..k]).unwrap();
            left -= k;
        }
        let images = e.finish().unwrap();
        let labels = gz(&encode_idx(&IdxArray {
            dims: vec![n],
            data: vec![3; n],
        }));
        let limited = check_pair(&images, &labels, ("i", "l"), (28, 28), 10, 100 << 20);
        assert!(limited.unwrap_err().to_string().contains("limit"));
        let whole = check_pair(&images, &labels, ("i", "l"), (28, 28), 10, 1 << 30).unwrap();
        assert_eq!(whole.examples, n);
        assert_eq!(whole.unpacked_bytes, (n * 784) as u64);
    }

    #[test]
    fn a_cancelled_scan_stops() {
        let (images, labels) = pair(3000, 28, vec![1; 3000]);
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let e = crate::engine::cancel::scope(flag, || check(&images, &labels)).unwrap_err();
        assert!(matches!(e, EngineError::Cancelled), "{e}");
    }
}
