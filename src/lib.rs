//! dbn-serve: deep belief nets (Hinton 2007, "Learning multiple layers of representation")
//! learned by contrastive divergence, and served.

/// Command-line subcommands: serve, openapi, train, eval, sample.
pub mod cli;
/// Server settings from flags and `DBN_…` variables.
pub mod config;
/// Pure numerics: RBMs, DBNs, data, persistence.
pub mod engine;
/// The HTTP API: routes, errors, OpenAPI, middleware.
pub mod http;
/// PNG/JPEG decoding and conversion of pictures to MNIST's form.
pub mod imaging;
/// Inference admission and dynamic batching of concurrent classification calls.
pub mod inference;
/// The training job queue and its workers.
pub mod jobs;
/// Image grids as PNG.
pub mod render;
/// Jobs in SQLite, models and checkpoints as files.
pub mod store;
