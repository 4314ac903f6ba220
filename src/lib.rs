//! dbn-serve: deep belief nets (Hinton 2007, "Learning multiple layers of representation")
//! learned by contrastive divergence, and served.

/// The digit model that ships inside the binary, installed on a first start.
pub mod bundled;
/// The command line. Subcommands: `serve` (the HTTP server; the default), `openapi` (print the
/// OpenAPI document), `healthcheck` (probe a running server's `/healthz`), `train` (train a
/// model from a spec), `finetune` (fine-tune a greedily trained model), `eval` (test error and
/// confusion matrix), `compact` (store weights as bfloat16), `sample` (generated digits as a
/// PNG grid), `ais` (log-probability by annealed importance sampling) and `mnist fetch`
/// (download MNIST).
pub mod cli;
/// Server settings from flags and `DBN_…` variables.
pub mod config;
/// Pure numerics: RBMs, DBNs, data, persistence.
pub mod engine;
/// MNIST on demand: checked, atomic, resumable downloads from public mirrors.
pub mod fetch;
/// The HTTP API: routers, routes, errors, OpenAPI, middleware (over whatever stores
/// `startup` chose).
pub mod http;
/// PNG/JPEG decoding and conversion of pictures to MNIST's form.
pub mod imaging;
/// Inference admission and dynamic batching of concurrent classification calls.
pub mod inference;
/// The training job queue: validation, worker threads, the observer that records progress and
/// writes checkpoints, training datasets by name, and (`cluster.rs`) the lease heartbeat and
/// event relay that let several replicas share one job store.
pub mod jobs;
/// Image grids as PNG.
pub mod render;
/// Start-up and shutdown: the data directory's lock, the choice of stores, the workers and
/// the server.
pub mod startup;
/// Where state lives. Jobs: an embedded SQLite file (`sqlite.rs`) or a shared PostgreSQL
/// database (`postgres/`, with its connection pool, TLS and event relay). Models, aliases and
/// checkpoints: files under the data directory (`fs.rs`) or an S3-compatible bucket
/// (`object/`), which also keeps uploaded datasets for the other replicas.
pub mod store;
