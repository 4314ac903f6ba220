//! dbn-serve: deep belief nets (Hinton 2007, "Learning multiple layers of representation")
//! learned by contrastive divergence, and served.

/// The digit model that ships inside the binary, installed on a first start.
pub mod bundled;
/// Command-line subcommands: serve, openapi, healthcheck, train, finetune, eval, compact,
/// sample, ais, mnist.
pub mod cli;
/// Server settings from flags and `DBN_…` variables.
pub mod config;
/// Pure numerics: RBMs, DBNs, data, persistence.
pub mod engine;
/// MNIST on demand: checked, atomic, resumable downloads from public mirrors.
pub mod fetch;
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
/// Jobs in SQLite or PostgreSQL; models, aliases and checkpoints as files or in S3.
pub mod store;
