//! The routes, one module per resource, each owning its `router()`.

pub mod datasets;
pub mod inference;
pub mod jobs;
pub mod models;
pub mod oip;
pub mod ops;
