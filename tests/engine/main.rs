//! The engine's tests, the command line's and the PostgreSQL job store's, in one binary
//! (the HTTP service's are in `tests/service/`): one link of the dependency graph instead of
//! one per file.

#[path = "../common/mod.rs"]
mod common;

mod ais;
mod autoencoder_layer;
mod checkpoint;
mod cli;
mod conditionals;
mod crbm;
mod deep_autoencoder;
mod exact_rbm;
mod examples;
mod finetune;
mod gaussian_dbn;
mod gaussian_units;
mod idx_errors;
mod persistence;
mod postgres_store;
mod semi_rbm;
mod training;
mod wake_sleep;
