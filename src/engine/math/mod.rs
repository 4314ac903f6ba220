//! Numeric kernels: matrix products (dense through faer, sparse by row gathering),
//! vectorised elementwise functions, and random draws.

pub mod activation;
pub mod product;
pub mod random;
mod simd;

pub use simd::{has_avx512, kernel_set};
pub mod sparse;
pub mod team;
pub mod update;

pub use activation::{sigmoid_bias_rows, softmax_bias_rows, softplus64, softplus_sum_shifted};
pub use product::{matmul, x_times_w, xt_times_p_add};
pub use random::{fill_normal, fill_uniform, sample_bernoulli, sample_categorical_rows};
pub use sparse::SparseRows;
pub use team::Team;
