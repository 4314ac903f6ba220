//! dbn-serve: deep belief nets (Hinton 2007, "Learning multiple layers of representation")
//! learned by contrastive divergence, and served.

/// Command-line subcommands: train, eval, sample.
pub mod cli;
/// Pure numerics: RBMs, DBNs, data, persistence.
pub mod engine;
/// Image grids as PNG.
pub mod render;
