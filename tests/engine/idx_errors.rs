//! Every malformed IDX case is an error value, never a panic.

use dbn_serve::engine::data::idx::{encode_idx, parse_idx};
use dbn_serve::engine::data::{Dataset, IdxArray};
use dbn_serve::engine::DataError;
use std::io::Write;

fn images(n: usize, rows: usize, cols: usize) -> IdxArray {
    IdxArray {
        dims: vec![n, rows, cols],
        data: (0..n * rows * cols).map(|i| (i % 256) as u8).collect(),
    }
}

fn labels(values: &[u8]) -> IdxArray {
    IdxArray {
        dims: vec![values.len()],
        data: values.to_vec(),
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

const MAX: u64 = 1 << 20;

#[test]
fn raw_and_gzipped_files_parse_to_the_same_array() {
    let a = images(3, 4, 5);
    let raw = encode_idx(&a);
    assert_eq!(parse_idx("raw", &raw, MAX).unwrap(), a);
    assert_eq!(parse_idx("gz", &gzip(&raw), MAX).unwrap(), a);
}

#[test]
fn malformed_headers_and_bodies_are_rejected() {
    let raw = encode_idx(&images(3, 4, 5));
    let err = |bytes: &[u8]| parse_idx("f", bytes, MAX).unwrap_err();
    assert!(matches!(err(&[]), DataError::Truncated { .. }));
    assert!(matches!(err(b"PK\x03\x04rest"), DataError::BadMagic { .. }));
    assert!(matches!(
        err(&[0, 0, 0x0D, 1, 0, 0, 0, 1, 0, 0, 0, 0]),
        DataError::UnsupportedType { code: 0x0D, .. }
    ));
    assert!(
        matches!(err(&raw[..10]), DataError::Truncated { .. }),
        "header cut short"
    );
    assert!(matches!(
        err(&raw[..raw.len() - 1]),
        DataError::Truncated {
            expected: 60,
            found: 59,
            ..
        }
    ));
    let mut long = raw.clone();
    long.push(7);
    assert!(matches!(
        err(&long),
        DataError::TrailingBytes { found: 1, .. }
    ));
    // Sizes whose product overflows are truncated files, not a panic.
    assert!(matches!(
        err(&[0, 0, 8, 3, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255]),
        DataError::Truncated { .. }
    ));
    let mut bad_gzip = gzip(&raw);
    let mid = bad_gzip.len() / 2;
    bad_gzip.truncate(mid);
    assert!(matches!(err(&bad_gzip), DataError::Gzip { .. }));
}

#[test]
fn decompression_beyond_the_limit_is_refused() {
    let big = encode_idx(&IdxArray {
        dims: vec![4096, 64],
        data: vec![0; 4096 * 64],
    });
    let result = parse_idx("bomb", &gzip(&big), 1000);
    assert!(matches!(
        result,
        Err(DataError::TooLarge { limit: 1000, .. })
    ));
}

#[test]
fn datasets_check_sizes_counts_and_labels() {
    let ok =
        Dataset::from_idx(&images(3, 28, 28), &labels(&[0, 9, 4]), Some((28, 28)), 10).unwrap();
    assert_eq!(ok.len(), 3);
    assert!(ok.images.iter().all(|p| (0.0..=1.0).contains(p)));
    assert_eq!(ok.images[[0, 255]], 1.0, "byte 255 is probability 1");
    let e =
        Dataset::from_idx(&images(3, 28, 27), &labels(&[0, 1, 2]), Some((28, 28)), 10).unwrap_err();
    assert!(matches!(e, DataError::ImageSize { found_cols: 27, .. }));
    let e =
        Dataset::from_idx(&images(3, 28, 28), &labels(&[0, 1]), Some((28, 28)), 10).unwrap_err();
    assert_eq!(
        e,
        DataError::CountMismatch {
            images: 3,
            labels: 2
        }
    );
    let e = Dataset::from_idx(&images(3, 28, 28), &labels(&[0, 10, 1]), None, 10).unwrap_err();
    assert!(matches!(
        e,
        DataError::LabelRange {
            label: 10,
            index: 1,
            ..
        }
    ));
    let e = Dataset::from_idx(&labels(&[1, 2]), &labels(&[0, 1]), None, 10).unwrap_err();
    assert!(matches!(
        e,
        DataError::Rank {
            expected: 3,
            found: 1,
            ..
        }
    ));
    let e = Dataset::from_idx(&images(2, 2, 2), &images(2, 1, 1), None, 10).unwrap_err();
    assert!(matches!(
        e,
        DataError::Rank {
            expected: 1,
            found: 3,
            ..
        }
    ));
}

#[test]
fn absurd_image_sizes_are_errors_not_panics() {
    // Zero images of 4294967295x4294967295: a valid IDX header whose row size overflows.
    let huge = IdxArray {
        dims: vec![0, u32::MAX as usize, u32::MAX as usize],
        data: vec![],
    };
    let e = Dataset::from_idx(&huge, &labels(&[]), None, 10).unwrap_err();
    assert!(matches!(e, DataError::Invalid { .. }), "{e}");
    // A hand-built array whose bytes do not match its dimensions.
    let short = IdxArray {
        dims: vec![2, 2, 2],
        data: vec![0; 5],
    };
    let e = Dataset::from_idx(&short, &labels(&[0, 1]), None, 10).unwrap_err();
    assert!(matches!(e, DataError::Invalid { .. }), "{e}");
}

#[test]
fn multi_member_gzip_files_are_read_whole() {
    let raw = encode_idx(&images(2, 3, 3));
    let (a, b) = raw.split_at(11);
    let mut two = gzip(a);
    two.extend(gzip(b));
    assert_eq!(
        parse_idx("two members", &two, MAX).unwrap(),
        images(2, 3, 3)
    );
}

#[test]
fn missing_mnist_files_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = Dataset::load_mnist(dir.path(), dbn_serve::engine::data::MnistSplit::Test).unwrap_err();
    assert!(matches!(e, DataError::Io { .. }), "{e}");
}

#[test]
fn a_prefix_load_keeps_the_first_examples_and_still_checks_counts() {
    use dbn_serve::engine::data::MnistSplit;
    let dir = tempfile::tempdir().unwrap();
    let write = |images: &IdxArray, labels: &IdxArray| {
        std::fs::write(
            dir.path().join("train-images-idx3-ubyte"),
            encode_idx(images),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("train-labels-idx1-ubyte"),
            encode_idx(labels),
        )
        .unwrap();
    };
    write(&images(5, 28, 28), &labels(&[3, 1, 4, 1, 5]));
    let all = Dataset::load_mnist(dir.path(), MnistSplit::Train).unwrap();
    let first = Dataset::load_mnist_first(dir.path(), MnistSplit::Train, Some(2)).unwrap();
    assert_eq!(first.labels, [3, 1]);
    assert_eq!(first.images, all.images.slice(ndarray::s![..2, ..]));
    let more = Dataset::load_mnist_first(dir.path(), MnistSplit::Train, Some(99)).unwrap();
    assert_eq!((more.labels, more.images), (all.labels, all.images));
    // Files that disagree on their count are refused even when the prefix would fit both.
    write(&images(5, 28, 28), &labels(&[3, 1, 4, 1]));
    assert!(matches!(
        Dataset::load_mnist_first(dir.path(), MnistSplit::Train, Some(2)),
        Err(DataError::CountMismatch { .. })
    ));
}
