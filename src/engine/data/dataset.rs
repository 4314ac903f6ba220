//! Labelled image datasets held in memory as f32 rows in [0, 1] (pixel / 255, used as
//! probabilities as in the seed), and the loader for MNIST's four standard files.

use std::path::Path;

use ndarray::{Array2, Axis};

use super::idx::{parse_idx, IdxArray, DEFAULT_MAX_BYTES};
use crate::engine::error::DataError;

/// Images as rows and their class labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// images: [n, rows·cols], values in [0, 1].
    pub images: Array2<f32>,
    /// labels: [n], each below `classes`.
    pub labels: Vec<u8>,
    pub image_rows: usize,
    pub image_cols: usize,
    pub classes: usize,
}

/// Which half of MNIST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MnistSplit {
    Train,
    Test,
}

impl MnistSplit {
    fn prefix(self) -> &'static str {
        match self {
            MnistSplit::Train => "train",
            MnistSplit::Test => "t10k",
        }
    }
}

impl Dataset {
    /// Builds a dataset from parsed IDX images ([n, rows, cols]) and labels ([n]), checking
    /// the image size when `expect` gives one, the counts, and the label range.
    pub fn from_idx(
        images: &IdxArray,
        labels: &IdxArray,
        expect: Option<(usize, usize)>,
        classes: usize,
    ) -> Result<Self, DataError> {
        if images.dims.len() != 3 {
            return Err(DataError::Rank {
                name: "images".into(),
                expected: 3,
                found: images.dims.len(),
            });
        }
        if labels.dims.len() != 1 {
            return Err(DataError::Rank {
                name: "labels".into(),
                expected: 1,
                found: labels.dims.len(),
            });
        }
        let (n, rows, cols) = (images.dims[0], images.dims[1], images.dims[2]);
        if let Some((er, ec)) = expect {
            if (rows, cols) != (er, ec) {
                return Err(DataError::ImageSize {
                    name: "images".into(),
                    expected_rows: er,
                    expected_cols: ec,
                    found_rows: rows,
                    found_cols: cols,
                });
            }
        }
        if labels.dims[0] != n {
            return Err(DataError::CountMismatch {
                images: n,
                labels: labels.dims[0],
            });
        }
        if let Some((index, &label)) = labels
            .data
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= classes)
        {
            return Err(DataError::LabelRange {
                name: "labels".into(),
                label,
                index,
                classes,
            });
        }
        let invalid = |message: String| DataError::Invalid {
            name: "images".into(),
            message,
        };
        let per_image = rows
            .checked_mul(cols)
            .ok_or_else(|| invalid(format!("{rows}x{cols} images are too large")))?;
        let bytes = images.data.len();
        let pixels = images.data.iter().map(|&p| p as f32 / 255.0).collect();
        let images = Array2::from_shape_vec((n, per_image), pixels).map_err(|e| {
            invalid(format!(
                "{bytes} bytes do not hold {n} images of {rows}x{cols}: {e}"
            ))
        })?;
        Ok(Dataset {
            images,
            labels: labels.data.clone(),
            image_rows: rows,
            image_cols: cols,
            classes,
        })
    }

    /// Loads one split of MNIST from `dir`, accepting the standard file names with or
    /// without `.gz` (the content decides whether it is gzipped). Images must be 28×28.
    pub fn load_mnist(dir: &Path, split: MnistSplit) -> Result<Self, DataError> {
        Self::load_mnist_first(dir, split, None)
    }

    /// Like [`Dataset::load_mnist`], keeping only the first `limit` examples (all when
    /// `None`): a run on a prefix does not hold the rest as floats.
    pub fn load_mnist_first(
        dir: &Path,
        split: MnistSplit,
        limit: Option<usize>,
    ) -> Result<Self, DataError> {
        let read = |kind: &str| -> Result<IdxArray, DataError> {
            let base = format!("{}-{kind}", split.prefix());
            let candidates = [dir.join(format!("{base}.gz")), dir.join(&base)];
            let path = candidates
                .iter()
                .find(|p| p.is_file())
                .ok_or_else(|| DataError::Io {
                    path: candidates[0].display().to_string(),
                    message: "not found (nor without .gz)".into(),
                })?;
            let bytes = std::fs::read(path).map_err(|e| DataError::Io {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            parse_idx(&path.display().to_string(), &bytes, DEFAULT_MAX_BYTES)
        };
        let mut images = read("images-idx3-ubyte")?;
        let mut labels = read("labels-idx1-ubyte")?;
        // Only files that agree on their count are cut, so a mismatch is still reported.
        if let Some(n) = limit {
            if images.dims.first() == labels.dims.first() {
                images.truncate_rows(n);
                labels.truncate_rows(n);
            }
        }
        Dataset::from_idx(&images, &labels, Some((28, 28)), 10)
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn n_pixels(&self) -> usize {
        self.images.ncols()
    }

    /// The examples at `range`, as a new dataset.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Dataset {
        Dataset {
            images: self.images.slice(ndarray::s![range.clone(), ..]).to_owned(),
            labels: self.labels[range].to_vec(),
            ..*self
        }
    }

    /// Splits off the last `n` examples (e.g. a validation set): (first, last).
    pub fn split_last(&self, n: usize) -> (Dataset, Dataset) {
        let cut = self.len().saturating_sub(n);
        (self.slice(0..cut), self.slice(cut..self.len()))
    }

    /// Labels as one-hot rows: [n, classes].
    pub fn one_hot_labels(&self) -> Array2<f32> {
        let mut out = Array2::zeros((self.len(), self.classes));
        for (mut row, &l) in out.axis_iter_mut(Axis(0)).zip(&self.labels) {
            row[l as usize] = 1.0;
        }
        out
    }
}
