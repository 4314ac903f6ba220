//! Data: the IDX file format (MNIST), and labelled datasets of images scaled to [0, 1].

pub mod dataset;
pub mod idx;

pub use dataset::{Dataset, MnistSplit};
pub use idx::{parse_idx, read_idx_file, IdxArray};
