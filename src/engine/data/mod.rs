//! Data: the IDX file format (MNIST), labelled datasets of images scaled to [0, 1], and
//! sequences of moving images made from them.

pub mod dataset;
pub mod idx;
pub mod moving;
pub mod scan;

pub use dataset::{Dataset, MnistSplit};
pub use idx::{parse_idx, read_idx_file, IdxArray};
pub use moving::MovingImages;
